/// The demo's database and policy: a small billing and analytics schema, and three
/// services bound to three roles of different power.
enum DemoScenario {
    static let schema = """
        CREATE SCHEMA billing;
        CREATE TABLE billing.customers (
            id bigserial PRIMARY KEY,
            email text NOT NULL,
            name text NOT NULL,
            card_last4 text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE billing.invoices (
            id bigserial PRIMARY KEY,
            customer_id bigint NOT NULL REFERENCES billing.customers,
            amount numeric(12, 2) NOT NULL,
            issued_on date NOT NULL DEFAULT current_date,
            paid boolean NOT NULL DEFAULT false
        );
        CREATE FUNCTION billing.close_month(month date) RETURNS integer LANGUAGE sql AS $$
            UPDATE billing.invoices SET paid = true
             WHERE date_trunc('month', issued_on) = date_trunc('month', month) AND NOT paid
            RETURNING 1
        $$;
        REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
        CREATE SCHEMA analytics;
        CREATE TABLE analytics.events (
            id bigserial PRIMARY KEY,
            name text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        );
        CREATE VIEW analytics.daily_events AS
            SELECT date_trunc('day', at) AS day, name, count(*) AS events FROM analytics.events GROUP BY 1, 2;
        INSERT INTO billing.customers (email, name, card_last4) VALUES
            ('ada@example.com', 'Ada', '4242'), ('grace@example.com', 'Grace', '1881'), ('linus@example.com', 'Linus', '0001');
        INSERT INTO billing.invoices (customer_id, amount) VALUES (1, 120.00), (2, 80.50), (3, 42.00);
        INSERT INTO analytics.events (name) SELECT (ARRAY['signup', 'login', 'purchase'])[1 + i % 3] FROM generate_series(1, 30) i;
        """

    static let policy = """
        # Written by 'rolegate demo'. Reference: docs/policy.md.
        version: 1
        databases:
          app:
            url: ${APP_ADMIN_URL}
        roles:
          analytics_ro:
            description: Dashboards read analytics, nothing else
            connection_limit: 10
            settings: {statement_timeout: 30s}
            grants:
              - on: SCHEMA analytics
                privileges: [USAGE]
              - on: ALL TABLES IN SCHEMA analytics
                privileges: [SELECT]
                future: true
          billing_writer:
            description: The billing API writes invoices and sees customers' contact columns only
            grants:
              - on: SCHEMA billing
                privileges: [USAGE]
              - on: TABLE billing.invoices
                privileges: [SELECT, INSERT, UPDATE]
              - on: SEQUENCE billing.invoices_id_seq
                privileges: [USAGE]
              - on: TABLE billing.customers
                privileges: [SELECT]
                columns: [id, email, name]
              - on: FUNCTION billing.close_month(date)
                privileges: [EXECUTE]
          support_ro:
            description: Support reads customers and invoices, including card digits
            grants:
              - on: SCHEMA billing
                privileges: [USAGE]
              - on: TABLE billing.customers
                privileges: [SELECT]
              - on: TABLE billing.invoices
                privileges: [SELECT]
        services:
          dashboard:
            role: analytics_ro
            token_ttl: 1h
          billing-api:
            role: billing_writer
            token_ttl: 15m
            max_token_ttl: 1h
          support-desk:
            role: support_ro
            token_ttl: 8h
            max_token_ttl: 12h
          ops:
            admin: true          # an admin token: the HTTP admin API only, never a database
            token_ttl: 8h
        """

    /// The tour: every command works as printed, in a shell that sourced `envFile`.
    static func tour(envFile: String, policyPath: String, base: String, port: Int, httpPort: Int) -> String {
        """

        == the gateway is up: wire on 127.0.0.1:\(port), HTTP on 127.0.0.1:\(httpPort) ==

        In another terminal:

          source \(envFile)

        Each service logs in with its token and gets exactly its role's privileges:

          PGPASSWORD=$DASHBOARD_TOKEN psql "$GW user=dashboard" -c 'SELECT name, count(*) FROM analytics.events GROUP BY 1'
          PGPASSWORD=$DASHBOARD_TOKEN psql "$GW user=dashboard" -c 'SELECT * FROM billing.invoices'            # permission denied
          PGPASSWORD=$BILLING_API_TOKEN psql "$GW user=billing-api" -c 'SELECT id, email FROM billing.customers'
          PGPASSWORD=$BILLING_API_TOKEN psql "$GW user=billing-api" -c 'SELECT card_last4 FROM billing.customers'  # permission denied
          PGPASSWORD=$SUPPORT_DESK_TOKEN psql "$GW user=support-desk" -c 'SELECT name, card_last4 FROM billing.customers'
          PGPASSWORD=$SUPPORT_DESK_TOKEN psql "$GW user=support-desk" -c 'DELETE FROM billing.invoices'          # permission denied

        The same tokens over HTTP, and the admin API with the admin token:

          curl -s $API/v1/query -H "Authorization: Bearer $DASHBOARD_TOKEN" -d '{"sql": "SELECT count(*) FROM analytics.events WHERE name = $1", "params": ["login"]}'
          curl -s $API/v1/query -H "Authorization: Bearer $DASHBOARD_TOKEN" -d '{"sql": "SELECT * FROM billing.invoices"}'   # 403 permission_denied
          curl -s $API/admin/v1/sessions -H "Authorization: Bearer $OPS_TOKEN"

        The console, in a browser: open http://127.0.0.1:\(httpPort)/console and paste the admin token
        (echo $OPS_TOKEN): the services' privileges, live sessions, tokens and the audit log.

        Revoke a token and watch its open session end within a second:

          PGPASSWORD=$DASHBOARD_TOKEN psql "$GW user=dashboard" -c 'SELECT pg_sleep(60)' &
          sleep 1; rolegate token revoke --service dashboard --reason demo     # the psql above ends: token revoked

        Everything was recorded, in a hash chain you can prove untampered:

          rolegate audit --limit 20
          rolegate audit verify

        Roles as code: drift is found and repaired:

          rolegate plan --check; echo "exit $?"            # 0: PostgreSQL matches the policy
          psql "$APP_ADMIN_URL" -c 'GRANT DELETE ON billing.invoices TO billing_writer'
          rolegate plan --check; echo "exit $?"            # 2: drift, and the REVOKE that repairs it
          rolegate apply --yes                             # back in sync, in one transaction

        Files: \(policyPath), \(base)/.rolegate/ (master key, store), \(base)/gateway.log.
        """
    }
}
