//! Repository functions: every SQL statement of the service, grouped by table.
//! They take a connection or transaction so services can compose them; no HTTP, no rules.

pub mod audit;
pub mod config_reloads;
pub mod conversations;
pub mod credentials;
pub mod deliveries;
pub mod jobs;
pub mod maintenance;
pub mod oidc_logins;
pub mod prompts;
pub mod sessions;
pub mod users;

/// `INSERT INTO table (a, b, …) VALUES (…)` with each value bound from the row's field of
/// the same name, so a value cannot land in another column (a query builder, to go on with
/// `ON CONFLICT …`).
macro_rules! insert_row {
    ($table:literal, $row:expr, [$first:ident $(, $column:ident)* $(,)?]) => {{
        let row = $row;
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
            "INSERT INTO ", $table, " (", stringify!($first) $(, ", ", stringify!($column))*, ") VALUES ("
        ));
        query.push_bind(&row.$first);
        $(
            query.push(", ");
            query.push_bind(&row.$column);
        )*
        query.push(")");
        query
    }};
}

/// ` ON CONFLICT (key) DO UPDATE SET a = excluded.a, …` for the listed columns.
macro_rules! update_set {
    ($key:literal, [$first:ident $(, $column:ident)* $(,)?]) => {
        concat!(
            " ON CONFLICT (", $key, ") DO UPDATE SET ", stringify!($first), " = excluded.", stringify!($first)
            $(, ", ", stringify!($column), " = excluded.", stringify!($column))*
        )
    };
}

pub(crate) use {insert_row, update_set};
