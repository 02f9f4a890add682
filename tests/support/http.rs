//! HTTP requests to the service's API, bounded in time: a service that stopped answering
//! fails the test instead of hanging it.

use std::time::Duration;

/// Every request's limit.
const TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

async fn send(req: reqwest::RequestBuilder, token: Option<&str>) -> (u16, String) {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTP request failed: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// `GET url` (with a bearer token if given): (status, body).
pub async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    send(client().get(url), token).await
}

/// `POST url` with an empty body: (status, body).
pub async fn post(url: &str, token: Option<&str>) -> (u16, String) {
    send(client().post(url), token).await
}

/// `POST url` with a body: (status, body).
pub async fn post_body(url: &str, token: Option<&str>, body: String) -> (u16, String) {
    send(client().post(url).body(body), token).await
}

/// `GET url` from synchronous code (the process tests): (status, body).
pub fn get_blocking(url: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let resp = client
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("HTTP request to {url} failed: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}
