// examples/watch.rs: `cargo run --release --example watch` while `zatt dev` runs.
use zatt::client::{
    endpoints_from_env, Client, ClientConfig, DistributedDict, Escaped, RefreshPolicy, WatchEvent,
};

fn show(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Put { key, value, .. } => format!("{} = {}", Escaped(key), Escaped(value)),
        WatchEvent::Delete { key, .. } => format!("{} deleted", Escaped(key)),
    }
}

fn main() -> Result<(), zatt::client::Error> {
    let endpoints = endpoints_from_env();
    // A stream of the changes under "jobs/", from now on, from any of the servers.
    let mut client = Client::connect(&endpoints, ClientConfig::default())?;
    let mut jobs = client.watch("jobs/", 0)?;

    // A dict loaded once, then kept current by the changes, with a hook for each.
    let mut d = DistributedDict::connect(&endpoints, ClientConfig::default())?
        .with_policy(RefreshPolicy::Watch);
    d.on_change(|e| println!("dict saw {}", show(e)));
    d.refresh()?; // load now; from here on the dict follows the changes
    d.insert("jobs/1", "queued")?;
    d.insert("jobs/1", "done")?;
    d.remove("jobs/1")?;
    assert_eq!(d.get("jobs/1")?, None); // a read sees the dict's own writes

    for event in jobs.by_ref().take(3) {
        println!("stream: {}", show(&event?));
    }
    Ok(())
}
