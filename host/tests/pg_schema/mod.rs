//! A fresh PostgreSQL schema in `DATABASE_URL`'s database for one test, dropped with its
//! guard (on panic too): the set-up the store suite, the API tests and the replica test
//! share. Tests in parallel each get their own schema, so they never see each other's
//! rows (announcements with `NOTIFY` are database-wide all the same).

#![allow(dead_code)]

use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A schema of its own; dropped (with everything in it) when this is dropped.
pub struct FreshSchema {
    /// Options whose connections work in the schema.
    pub options: PgConnectOptions,
    /// A URL whose connections work in the schema (for a child process or a listener).
    pub url: String,
    /// The schema's name.
    pub name: String,
    admin_url: String,
}

impl FreshSchema {
    /// Creates `<prefix>_<test>_<pid>_<n>`; `None`, said loudly on stderr naming `what`,
    /// when `DATABASE_URL` is not set.
    pub async fn create(prefix: &str, test: &str, what: &str) -> Option<FreshSchema> {
        let Ok(admin_url) = std::env::var("DATABASE_URL") else {
            // Not `eprintln!`: the test harness captures that; this must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: DATABASE_URL not set — {what} ({test}) did not run"
            );
            return None;
        };
        let name = format!(
            "{prefix}_{test}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect DATABASE_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create schema");
        admin.close().await.ok();
        let options = PgConnectOptions::from_str(&admin_url)
            .expect("DATABASE_URL")
            .options([("search_path", name.as_str())]);
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{name}");
        Some(FreshSchema {
            options,
            url,
            name,
            admin_url,
        })
    }
}

impl Drop for FreshSchema {
    fn drop(&mut self) {
        // A plain thread with its own runtime, so it works inside or outside one.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
