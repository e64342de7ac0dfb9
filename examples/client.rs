// examples/client.rs: `cargo run --release --example client` while `zatt dev` runs.
use zatt::client::{endpoints_from_env, Client, ClientConfig, Expect};

fn main() -> Result<(), zatt::client::Error> {
    let mut client = Client::connect(&endpoints_from_env(), ClientConfig::default())?;
    let revision = client.put("app/greeting", "hello")?;
    assert_eq!(client.get("app/greeting")?, Some(b"hello".to_vec()));
    // Swap only if nobody wrote the key since: the revision is its last write's.
    client.cas(
        "app/greeting",
        Expect::Revision(revision),
        Some(b"bye".to_vec()),
    )?;
    client.put("app/motd", "tab\there")?;
    for page in client.scan("app/") {
        for kv in page? {
            println!("{kv}"); // key = value, escaped (see zatt::client::Escaped)
        }
    }
    Ok(())
}
