//! The local Redis Cluster harness (`redis_cluster::RedisCluster`) works: keys spread over its three masters
//! through the `redis` crate's cluster client, and a master can be stopped and restarted for failover tests.

mod redis_cluster;

use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::AsyncCommands;
use redis_cluster::RedisCluster;

const KEYS: usize = 100;

/// Bounded retries and timeouts, so that a dead master shows up as an error in seconds, not minutes.
fn cluster_client(cluster: &RedisCluster) -> ClusterClient {
    ClusterClient::builder(cluster.seed_urls())
        .retries(2)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

async fn plain(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[test]
fn a_local_three_master_cluster_starts_and_spreads_keys() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = RedisCluster::start();

    let key_on_node_1: String = runtime.block_on(async {
        let mut conn = cluster_client(&cluster).get_async_connection().await.unwrap();
        for i in 0..KEYS {
            let _: () = conn.set(format!("sm-cluster-{i}"), i).await.unwrap();
        }
        for i in 0..KEYS {
            let value: Option<usize> = conn.get(format!("sm-cluster-{i}")).await.unwrap();
            assert_eq!(value, Some(i), "sm-cluster-{i} read back");
        }

        let mut sizes = Vec::new();
        for url in cluster.seed_urls() {
            let size: usize = redis::cmd("DBSIZE").query_async(&mut plain(&url).await).await.unwrap();
            sizes.push(size);
        }
        assert_eq!(sizes.iter().sum::<usize>(), KEYS, "every key on exactly one master: {sizes:?}");
        assert!(sizes.iter().all(|&size| size > 0), "keys on all three masters: {sizes:?}");

        let on_node_1: Vec<String> = plain(&cluster.node_url(1)).await.keys("sm-cluster-*").await.unwrap();
        on_node_1[0].clone()
    });

    cluster.stop_node(1);
    runtime.block_on(async {
        let started = Instant::now();
        let mut conn = cluster_client(&cluster).get_async_connection().await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.get::<_, Option<usize>>(&key_on_node_1)).await;
        assert!(
            matches!(read, Ok(Err(_))),
            "a GET of {key_on_node_1} on the stopped master errors within 10 s, got {read:?} after {:?}",
            started.elapsed()
        );
    });

    cluster.restart_node(1);
    runtime.block_on(async {
        // The node rejoins with its slots but not its data (nothing is persisted).
        let mut conn = cluster_client(&cluster).get_async_connection().await.unwrap();
        let _: () = conn.set(&key_on_node_1, 7).await.unwrap();
        let value: Option<usize> = conn.get(&key_on_node_1).await.unwrap();
        assert_eq!(value, Some(7), "{key_on_node_1} served by the restarted master");
        let on_node_1: Option<usize> = plain(&cluster.node_url(1)).await.get(&key_on_node_1).await.unwrap();
        assert_eq!(on_node_1, Some(7), "{key_on_node_1} lives on node 1 again");
    });
}
