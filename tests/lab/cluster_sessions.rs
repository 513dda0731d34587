//! The status page's sessions across replicas: a browser behind a load
//! balancer logs in on one replica and goes on on another.

use super::*;

/// GET `url` with the session `cookie`: (status, the page's CSRF token or
/// None for the login form).
async fn page(url: &str, cookie: &str) -> (u16, Option<String>) {
    let r = server::client()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    let token = body
        .split("<meta name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .map(str::to_string);
    (st, token)
}

/// POST `url` with `cookie` and, if given, the CSRF token.
async fn post(url: &str, cookie: &str, csrf: Option<&str>) -> u16 {
    let mut r = server::client().post(url).header("cookie", cookie);
    if let Some(t) = csrf {
        r = r.header("x-csrf-token", t);
    }
    r.send().await.unwrap().status().as_u16()
}

/// Logged in on r1, the browser's cookie opens the page on r2 with the
/// same CSRF token; a change on r2 needs that token (403 without it, done
/// with it); logging out on r2 ends the session on r1 too. The cookie
/// holds only the session id, which no bucket stores.
#[tokio::test]
async fn a_session_opened_on_one_replica_is_known_to_every_replica() {
    let Some(lab) = lab() else { return };
    let _fence = HOST_FENCE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(n) = one_node(dir.path()) else {
        return;
    };
    let keys = Keys::make(dir.path(), lab.host(0));
    let _w = Worker::start(dir.path(), "a", &n.url(), &lab.inventory, &STEADY);
    let urls = n.url();
    let replica = |name: &str| replica_named(dir.path(), &lab, &keys, &[], &urls, name, &[]);
    let (r1, r2) = (replica("r1"), replica("r2"));
    until_all_read(&r1, &keys.read, lab.len(), Duration::from_secs(30)).await;
    let cookie = server::login(&server::client(), &r1.url("/login"), &keys.operate).await;
    let id = cookie.split_once('=').unwrap().1.to_string();
    let (st, on_r1) = page(&r1.url("/"), &cookie).await;
    assert_eq!(st, 200);
    let token = on_r1.expect("r1 shows the page, not the login form");
    let (st, on_r2) = page(&r2.url("/"), &cookie).await;
    assert_eq!(st, 200);
    assert_eq!(
        on_r2.as_deref(),
        Some(token.as_str()),
        "r2 does not know r1's session"
    );

    let stop = r2.url(&format!(
        "/node/{}/service/demo-idle/stop?wait=30s",
        lab.host(0)
    ));
    assert_eq!(
        post(&stop, &cookie, None).await,
        403,
        "a change without the token"
    );
    assert_eq!(
        post(&stop, &cookie, Some("0000")).await,
        403,
        "a change with a wrong token"
    );
    assert_eq!(
        post(&stop, &cookie, Some(&token)).await,
        200,
        "{}",
        r2.log()
    );

    // Logged out on r2: gone on r1 as well.
    assert!(post(&r2.url("/logout"), &cookie, Some(&token)).await < 400);
    let (st, gone) = page(&r1.url("/"), &cookie).await;
    assert_eq!(st, 200);
    assert_eq!(gone, None, "r1 still shows the page after the logout on r2");
    for log in [r1.log(), r2.log()] {
        assert!(!log.contains(&id) && !log.contains(&keys.operate), "{log}");
    }
    // The bucket holds a digest of the id, never the id.
    let client = async_nats::connect(n.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("drover_sessions").await.unwrap();
    let mut keys_seen = kv.keys().await.unwrap();
    while let Some(k) = futures_util::StreamExt::next(&mut keys_seen).await {
        assert_ne!(k.unwrap(), id);
    }
}
