//! Reading artifacts that a writer keeps replacing (a running job's checkpoint), against a real
//! nats-server.

mod util;

use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use promptgrid_runtime::NatsConfig;
use promptgrid_runtime::objects::read_object;
use util::server;

/// Three chunks of the store's default 128 KiB, all bytes equal to the version: a read that
/// mixed two versions, or stopped short, shows.
fn version(v: u8) -> Vec<u8> {
    vec![v; 3 * 128 * 1024 + 17]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_an_object_replaced_meanwhile_return_one_whole_version() {
    let (_d, srv) = server(&[]);
    let client = NatsConfig::new(srv.url()).connect().await.unwrap();
    let js = jetstream::new(client);
    let store = js
        .create_object_store(object_store::Config {
            bucket: "race".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(read_object(&store, "ckpt").await.unwrap(), None);
    store.put("ckpt", &mut version(0).as_slice()).await.unwrap();

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut puts = 0u32;
            while !*stopped.borrow_and_update() {
                puts += 1;
                let v = (puts % 250) as u8;
                store.put("ckpt", &mut version(v).as_slice()).await.unwrap();
            }
            puts
        })
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        for _ in 0..30 {
            let b = read_object(&store, "ckpt").await.unwrap().expect("stored");
            assert_eq!(b.len(), version(0).len(), "a read stopped short");
            assert!(b.iter().all(|&x| x == b[0]), "a read mixed two versions");
        }
    })
    .await
    .expect("a read of a replaced object hung");
    stop.send(true).unwrap();
    let puts = writer.await.unwrap();
    assert!(puts >= 30, "only {puts} writes overlapped the reads");

    store.delete("ckpt").await.unwrap();
    assert_eq!(read_object(&store, "ckpt").await.unwrap(), None);
}
