// sqlx embeds migrations/ at compile time: rebuild when a migration changes (sqlx docs, "migrate!").
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
