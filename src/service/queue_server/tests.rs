//! The service on its own: sessions, the open-read limit, status gates.
use super::*;

/// A get, finished: the items it delivers.
async fn read(
    k: &QueueServer,
    session: &mut Session,
    queue: &str,
    request: GetRequest,
) -> Result<Vec<Delivered>, ServiceError> {
    Ok(k.get(session, queue, request).await?.finish().await)
}

/// A service with journaled queues in a temporary directory.
fn service() -> (QueueServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_open_transactions: 2,
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    (
        QueueServer::new(&config, CancellationToken::new()).unwrap(),
        dir,
    )
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn req(max_items: usize, read: Read) -> GetRequest {
    GetRequest {
        max_items,
        timeout: None,
        read,
    }
}

#[tokio::test]
async fn session_reads_are_aborted_when_the_session_ends() {
    let (k, _dir) = service();
    k.put("q", vec![b("a"), b("b")], Expiry::Never)
        .await
        .unwrap();
    let mut s = k.session();
    let got = read(&k, &mut s, "q", req(1, Read::Open)).await.unwrap();
    assert_eq!((got[0].data.as_ref(), got[0].id), (&b"a"[..], None));
    assert!(matches!(
        read(&k, &mut s, "q", req(1, Read::Take)).await,
        Err(ServiceError::OpenReadPending)
    ));
    drop(s);
    let mut s2 = k.session();
    let got = read(&k, &mut s2, "q", req(2, Read::Take)).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
        [b("a"), b("b")]
    );
}

#[tokio::test]
async fn open_read_limit_is_per_session_and_queue() {
    let (k, _dir) = service();
    k.put("q", vec![b("a"), b("b"), b("c")], Expiry::Never)
        .await
        .unwrap();
    let mut s = k.session();
    assert_eq!(
        read(&k, &mut s, "q", req(5, Read::Open))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(matches!(
        read(&k, &mut s, "q", req(1, Read::Open)).await,
        Err(ServiceError::TooManyOpenReads { limit: 2 })
    ));
    assert!(matches!(
        k.confirm(&mut s, "q", Transactions::Oldest(3)).await,
        Err(ServiceError::NotEnoughOpen { wanted: 3, open: 2 })
    ));
    assert_eq!(
        k.confirm(&mut s, "q", Transactions::Oldest(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(k.abort(&mut s, "q", Transactions::All).await.unwrap(), 1);
    let mut s2 = k.session();
    let got = read(&k, &mut s2, "q", req(5, Read::Take)).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
        [b("b"), b("c")]
    );
}

#[tokio::test]
async fn status_gates_reads_and_writes_but_not_settling() {
    let (k, _dir) = service();
    k.put("q", vec![b("a")], Expiry::Never).await.unwrap();
    let mut s = k.session();
    let id = read(
        &k,
        &mut s,
        "q",
        req(1, Read::OpenWithTimeout(Duration::from_secs(60))),
    )
    .await
    .unwrap()[0]
        .id;
    k.set_status(ServerStatus::ReadOnly).await.unwrap();
    assert!(matches!(
        k.put("q", vec![b("x")], Expiry::Never).await,
        Err(ServiceError::Unavailable { .. })
    ));
    assert!(k.peek("q").is_ok());
    k.set_status(ServerStatus::Quiescent).await.unwrap();
    assert!(read(&k, &mut s, "q", req(1, Read::Take)).await.is_err());
    assert!(k.peek("q").is_err());
    assert_eq!(
        k.confirm(&mut s, "q", Transactions::Ids(vec![id.unwrap()]))
            .await
            .unwrap(),
        1
    );
}
