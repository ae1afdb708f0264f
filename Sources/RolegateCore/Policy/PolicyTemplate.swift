/// The commented example `rolegate init` writes.
public enum PolicyTemplate {
    public static let example = #"""
        # rolegate.yaml — databases, least-privilege roles, and the services bound to them.
        # Reference: docs/policy.md. Check it with: rolegate validate
        version: 1

        # Databases Rolegate administers. The key is the name clients use as dbname.
        databases:
          app:
            # Admin connection for plan/apply. ${VAR} reads the environment, so no password
            # needs to live in this file. The admin needs CREATEROLE and ownership of (or
            # GRANT OPTION on) the objects below; it need not be a superuser.
            url: ${APP_ADMIN_URL}
            # future_owners: [migrator]   # whose new objects 'future: true' covers (default: the admin)

        # Roles Rolegate creates and owns. Each can log in only through the gateway, with a
        # credential derived from the master key (.rolegate/master.key); nobody sees it.
        roles:
          analytics_ro:
            description: Read-only access for dashboards
            connection_limit: 10
            settings: {statement_timeout: 30s}     # ALTER ROLE ... SET
            grants:
              - on: SCHEMA public
                privileges: [USAGE]
              - on: ALL TABLES IN SCHEMA public
                privileges: [SELECT]
                future: true                       # tables created later too

          # billing_writer:
          #   grants:
          #     - on: SCHEMA billing
          #       privileges: [USAGE]
          #     - on: TABLE billing.invoices
          #       privileges: [SELECT, INSERT, UPDATE]
          #     - on: TABLE billing.customers
          #       privileges: [SELECT]
          #       columns: [id, email]             # column-level grant
          #     - on: SEQUENCE billing.invoices_id_seq
          #       privileges: [USAGE]
          #     - on: FUNCTION billing.close_month(date)
          #       privileges: [EXECUTE]

        # Services: each holds one short-lived token bound to exactly one role.
        services:
          dashboard:
            role: analytics_ro
            token_ttl: 1h
            max_token_ttl: 24h

        """#
}
