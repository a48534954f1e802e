//! Bugs this harness found in cairn, each as the smallest scenario that shows it. They stay
//! here after the fix.

use anyhow::{bail, Result};
use cairn_robust::cluster::{connect, ClusterSpec, TestCluster};
use cairn_robust::run::ensure_binary;
use etcd_client::WatchOptions;
use std::time::Duration;

fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

/// Found by every run (all whole-keyspace watchers start at revision 1): on a fresh cluster
/// (revision 1, no event yet) a watch created with `start_revision = 1` is never delivered
/// anything, on any member; etcd delivers every later event. In the watch hub's catch-up
/// (`cairn-server/src/watch/catchup.rs`) the history read from revision 1 is empty, so the
/// watcher's watermark neither advances nor passes the published revision (1): it stays
/// unsynced, the round reports no progress, and no later publish or round picks it up.
/// Fixed in `catchup_round`: a read that did not stop at its revision limit covered every
/// revision up to the published one.
#[test]
fn a_watch_from_revision_one_on_a_fresh_cluster_sees_the_first_write() -> Result<()> {
    ensure_binary()?;
    block_on(async {
        let cluster = TestCluster::start(&ClusterSpec::new(3)).await?;
        let mut streams = Vec::new();
        for i in 0..cluster.len() {
            let client = connect(&cluster.endpoint(i)).await?;
            let opts = WatchOptions::new()
                .with_range(vec![0])
                .with_start_revision(1);
            let stream = tokio::time::timeout(
                Duration::from_secs(5),
                client.watch_client().watch(vec![0], Some(opts)),
            )
            .await??;
            streams.push((i, stream));
        }
        let mut kv = connect(&cluster.endpoint(0)).await?.kv_client();
        tokio::time::timeout(Duration::from_secs(5), kv.put("a", "1", None)).await??;
        for (i, mut stream) in streams {
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match stream.message().await? {
                        Some(r) if !r.events().is_empty() => return Ok(r.events().len()),
                        Some(_) => continue,
                        None => bail!("stream ended"),
                    }
                }
            })
            .await;
            match got {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("{}: {e:#}", cluster.name(i)),
                Err(_) => bail!(
                    "{}: a watch from revision 1 got no event within 5s of the first put",
                    cluster.name(i)
                ),
            }
        }
        Ok(())
    })
}
