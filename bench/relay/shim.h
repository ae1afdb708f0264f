// The system headers the bare relay needs beyond Glibc (which leaves epoll out).
#include <sys/epoll.h>
#include <netinet/tcp.h>
