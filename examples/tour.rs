// examples/tour.rs: `cargo run --release --example tour` while `zatt dev` runs.
use zatt::client::{endpoints_from_env, Client, ClientConfig, DistributedDict, RefreshPolicy};

fn main() -> Result<(), zatt::client::Error> {
    // zatt dev's servers, or those in $ZATT_ENDPOINTS (as for the zatt command line).
    let servers = endpoints_from_env();
    let (first, last) = (&servers[..1], &servers[servers.len() - 1..]);
    let mut a = Client::connect(first, ClientConfig::default())?;
    let mut b = Client::connect(last, ClientConfig::default())?;
    a.put("hello", "world")?;
    assert_eq!(b.get("hello")?, Some(b"world".to_vec())); // linearizable by default

    // A local copy of the whole dictionary, refreshed before every 100th read.
    let mut d = DistributedDict::connect(&servers, ClientConfig::default())?
        .with_policy(RefreshPolicy::Count(100));
    d.insert("colour", "blue")?;
    let (colour, hello) = (d.get("colour")?, d.get("hello")?); // owned values: hold both
    assert_eq!(colour, Some(b"blue".to_vec()));
    assert_eq!(hello, Some(b"world".to_vec()));
    println!("{d:?}");
    Ok(())
}
