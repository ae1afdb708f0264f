#!/usr/bin/env bash
# The longer fuzz run: builds the WireFuzz target with libFuzzer (and AddressSanitizer)
# and fuzzes the gateway's client-facing parsing for a while (default 10 minutes),
# growing fuzz/corpus. A crash leaves crash-* files here and exits non-zero.
#   fuzz/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
swift build --product WireFuzz --build-path .build/fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld
binary="$(swift build --product WireFuzz --build-path .build/fuzz --show-bin-path)/WireFuzz"
mkdir -p fuzz/corpus fuzz/findings
# New inputs go to a scratch directory first; the kept corpus is then minimised into fuzz/corpus.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$binary" "$scratch" fuzz/corpus -max_total_time="$seconds" -max_len=4096 -timeout=10 \
    -artifact_prefix=fuzz/findings/ -print_final_stats=1
"$binary" -merge=1 fuzz/corpus "$scratch" >/dev/null 2>&1 || true
echo "fuzz: no crash in ${seconds}s; corpus: $(ls fuzz/corpus | wc -l) inputs"
