// JDBC (pgjdbc) through the Rolegate gateway: prepared statements past the server-side
// prepare threshold, a batch in a rolled-back transaction, metadata queries as GUIs run them,
// Statement.cancel(), a denied statement and a wrong token. Exits non-zero on any failure.
//
// Usage: java -cp postgresql.jar JdbcClient.java HOST PORT SERVICE DATABASE   (token in PGPASSWORD)
import java.sql.*;
import java.util.*;

public class JdbcClient {
    static void check(boolean condition, String message) {
        if (!condition) {
            System.out.println("FAIL: " + message);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[3] + "?sslmode=disable&prepareThreshold=2";
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", System.getenv("PGPASSWORD"));
        try (Connection conn = DriverManager.getConnection(url, props)) {
            // Prepared statements: after prepareThreshold uses pgjdbc switches to a named server-side statement.
            try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int * 2")) {
                for (int i = 0; i < 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next() && rs.getInt(1) == i * 2, "prepared statement round " + i);
                    }
                }
            }
            // A batch inside a transaction that is rolled back leaves nothing behind.
            conn.setAutoCommit(false);
            try (PreparedStatement insert = conn.prepareStatement("INSERT INTO public.notes (id, body) VALUES (?, ?)")) {
                for (int i = 0; i < 100; i++) {
                    insert.setInt(1, 10_000 + i);
                    insert.setString(2, "jdbc " + i);
                    insert.addBatch();
                }
                int[] counts = insert.executeBatch();
                check(counts.length == 100, "batch of 100");
            }
            conn.rollback();
            conn.setAutoCommit(true);
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM public.notes WHERE id >= 10000")) {
                check(rs.next() && rs.getLong(1) == 0, "the rolled-back batch left rows");
            }
            // What GUI clients ask first.
            DatabaseMetaData meta = conn.getMetaData();
            check(meta.getDatabaseProductName().equals("PostgreSQL"), "product name");
            try (ResultSet tables = meta.getTables(null, "public", "notes", new String[] {"TABLE"})) {
                check(tables.next(), "metadata lists public.notes");
            }
            // A statement the role may not run.
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM billing.invoices");
                check(false, "billing.invoices was readable");
            } catch (SQLException e) {
                check("42501".equals(e.getSQLState()), "permission denied, got " + e.getSQLState());
            }
            // Statement.cancel() from another thread.
            try (Statement st = conn.createStatement()) {
                Timer timer = new Timer(true);
                timer.schedule(new TimerTask() {
                    public void run() {
                        try { st.cancel(); } catch (SQLException ignored) {}
                    }
                }, 500);
                long started = System.nanoTime();
                try {
                    st.execute("SELECT pg_sleep(30)");
                    check(false, "pg_sleep(30) was not cancelled");
                } catch (SQLException e) {
                    check("57014".equals(e.getSQLState()), "cancelled, got " + e.getSQLState());
                }
                double elapsed = (System.nanoTime() - started) / 1e9;
                check(elapsed < 2.0, "cancel took " + elapsed + " s");
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT current_user")) {
                check(rs.next() && rs.getString(1).equals("notes_rw"), "logged in as the role");
            }
        }
        // A wrong token.
        props.setProperty("password", "rgt_wrong");
        try {
            DriverManager.getConnection(url, props).close();
            check(false, "a wrong token connected");
        } catch (SQLException e) {
            check("28P01".equals(e.getSQLState()), "wrong token: " + e.getSQLState());
        }
        System.out.println("jdbc: all checks passed");
    }
}
