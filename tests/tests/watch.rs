//! probe
use cairn_api::etcdserverpb::watch_client::WatchClient;
use cairn_api::etcdserverpb::{
    watch_request::RequestUnion, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest,
};
use cairn_tests::{Kind, Server};
use std::time::Duration;

fn create(c: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(c)),
    }
}

#[tokio::test]
async fn probe() {
    let s = Server::start(Kind::Etcd, &["--max-request-bytes=2000"]).unwrap();
    let mut kv = s.client().await.unwrap();
    for i in 0..5 {
        kv.put(format!("k{i}"), "v".repeat(10), None).await.unwrap();
    }
    kv.compact(3, None).await.unwrap();
    let ch = tonic::transport::Endpoint::from_shared(s.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut w = WatchClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(10);
    let mut st = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let reqs = vec![
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 2,
            ..Default::default()
        }),
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 3,
            ..Default::default()
        }),
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 4,
            watch_id: 7,
            ..Default::default()
        }),
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 4,
            watch_id: 7,
            ..Default::default()
        }),
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"a".to_vec(),
            ..Default::default()
        }),
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: -3,
            ..Default::default()
        }),
        WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        },
        WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 7,
            })),
        },
        WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 99,
            })),
        },
        WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 0,
            })),
        },
        create(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 2,
            fragment: true,
            prev_kv: true,
            ..Default::default()
        }),
    ];
    for r in reqs {
        tx.send(r).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_millis(300), st.message()).await
        {
            println!("{m:?}");
        }
        println!("----");
    }
}
