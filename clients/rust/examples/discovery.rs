//! Finds the servers through ZooKeeper server sets, then puts and gets one
//! item: `cargo run -p kestrel-client --example discovery -- ZK_HOSTS [PREFIX]`.

use std::time::Duration;

use kestrel_client::{Client, Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hosts = args.next().unwrap_or_else(|| "127.0.0.1:2181".into());
    let prefix = args.next().unwrap_or_else(|| "/kestrel".into());
    let mut client = Client::from_zookeeper(&hosts, &prefix, Config::default())?;
    let servers = client.servers();
    println!("write set: {:?}", servers.write);
    println!("read set:  {:?}", servers.read);
    client.put("discovery-example", &[b"hello".to_vec()], None)?;
    let items = client.get("discovery-example", 1, Duration::from_secs(1))?;
    for item in items {
        println!("got: {}", String::from_utf8_lossy(&item));
    }
    Ok(())
}
