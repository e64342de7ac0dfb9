// examples/dict.rs: `cargo run --release --example dict` while `zatt dev` runs.
use zatt::client::{endpoints_from_env, ClientConfig, DistributedDict, Escaped, RefreshPolicy};

fn main() -> Result<(), zatt::client::Error> {
    let mut d = DistributedDict::connect(&endpoints_from_env(), ClientConfig::default())?
        .with_policy(RefreshPolicy::Count(10)); // a refresh, then up to 10 reads of the copy
    d.insert("colour", "blue")?;
    d.insert("shape", "round")?;
    assert_eq!(d.get("colour")?, Some(b"blue".to_vec()));
    println!("{d:?}");
    for (key, value) in &d {
        println!("{} is {}", Escaped(key), Escaped(value));
    }
    d.remove("shape")?;
    Ok(())
}
