//! A webhook receiver for tests: a real HTTP server on loopback that answers with a script of status
//! codes and checks every delivery with the independent Standard Webhooks implementation from
//! crates.io (`standardwebhooks`, by the specification's authors).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Instant,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub answered: u16,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }

    /// Checks the signature with `standardwebhooks` and `secret` (`whsec_…`).
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
        webhook.verify(&self.body, &self.headers).map_err(|e| e.to_string())
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Delivery>>,
    /// Answers to give, in order (status, Retry-After); then 200.
    script: Mutex<VecDeque<(u16, Option<String>)>>,
    /// How long each answer takes.
    delay: Mutex<Duration>,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .expect("receiver binds");
        let url = format!("http://127.0.0.1:{}/hooks", server.addrs()[0].port());
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, shared, handle }
    }

    /// The next answers, in order, before it goes back to 200.
    pub fn script(&self, answers: &[(u16, Option<&str>)]) {
        let mut script = self.shared.script.lock().unwrap();
        script.extend(answers.iter().map(|(code, retry_after)| (*code, retry_after.map(str::to_string))));
    }

    /// Takes `delay` to answer each delivery from now on (a slow endpoint).
    pub fn answer_after(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `count` deliveries arrived; returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(Instant::now() < deadline, "expected {count} deliveries within {timeout:?}, got {}: {received:#?}", received.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let mut headers = http::HeaderMap::new();
    for (name, value) in req.headers() {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.as_str().as_bytes()), http::HeaderValue::from_bytes(value.as_bytes())) {
            headers.append(name, value);
        }
    }
    let delay = *shared.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let (status, retry_after) = shared.script.lock().unwrap().pop_front().unwrap_or((200, None));
    shared.received.lock().unwrap().push(Delivery { at: Instant::now(), headers, body: body.to_vec(), answered: status });
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"));
    if let Some(seconds) = retry_after {
        response.insert_header(("retry-after", seconds));
    }
    response.body(format!("answered {status}"))
}
