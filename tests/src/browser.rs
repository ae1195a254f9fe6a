//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, installed by
//! deploy/test), for tests that use a page the way a person does: typing, clicking, choosing files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::unix::process::CommandExt;

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};

use crate::free_port;

pub struct Browser {
    pub client: Client,
    /// Where the browser saves downloads.
    pub downloads: PathBuf,
    screenshots: PathBuf,
    _driver: ProcessGroup,
}

/// A child leading its own process group; the whole group is killed on drop.
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

/// Reads of an element the live pages redraw (charts, tables) may find it replaced between the
/// lookup and the read: they look it up again, this many times.
const STALE_RETRIES: usize = 40;

fn stale(error: &fantoccini::error::CmdError) -> bool {
    matches!(error, fantoccini::error::CmdError::Standard(e) if e.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a tall window (screenshots show whole pages).
    /// Screenshots go to `screenshots`, downloads to a fresh directory under it.
    pub async fn start(screenshots: &Path) -> Self {
        let port = free_port();
        // A process group of its own: dropping the browser ends chromedriver and the Chromium it
        // started, even when a test panics before closing its session.
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; deploy/test installs it)");
        let driver = ProcessGroup(driver);
        let downloads = screenshots.join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads directory");
        let capabilities = serde_json::json!({"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2400"],
            "prefs": {"download.default_directory": downloads, "download.prompt_for_download": false},
        }});
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            // Plain HTTP: chromedriver listens on loopback only.
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                // chromedriver is still starting.
                Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Self { client, downloads, screenshots: screenshots.to_path_buf(), _driver: driver }
    }

    /// Waits (up to `timeout`) for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        self.client.wait().at_most(timeout).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css} within {timeout:?}: {e}"))
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.expect("find_all")
    }

    /// Clicks the element matching `css`. The page redraws parts of itself as events arrive, so an
    /// element found a moment ago may have been replaced: the click is retried on a fresh lookup.
    pub async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            match self.wait_for(css, Duration::from_secs(10)).await.click().await {
                Ok(()) => return,
                Err(_) if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Clears a field and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for(css, Duration::from_secs(10)).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    pub async fn text(&self, css: &str) -> String {
        for _ in 0..STALE_RETRIES {
            match self.find(css).await.text().await {
                Err(e) if stale(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                result => return result.expect("text"),
            }
        }
        panic!("{css} kept being redrawn while its text was read");
    }

    /// The texts of every element matching `css`, in page order; read again from a fresh lookup
    /// when the page redraws them between the lookup and the reads.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        'lookup: for _ in 0..STALE_RETRIES {
            let mut texts = Vec::new();
            for element in self.find_all(css).await {
                match element.text().await {
                    Ok(text) => texts.push(text),
                    Err(e) if stale(&e) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue 'lookup;
                    }
                    Err(e) => panic!("text of {css}: {e}"),
                }
            }
            return texts;
        }
        panic!("{css} kept being redrawn while its texts were read");
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        for _ in 0..STALE_RETRIES {
            match self.find(css).await.attr(name).await {
                Err(e) if stale(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                result => return result.expect("attribute"),
            }
        }
        panic!("{css} kept being redrawn while its {name} was read");
    }

    /// Waits until `condition` holds for the text of `css` (the page updates itself).
    pub async fn wait_for_text(&self, css: &str, timeout: Duration, condition: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if condition(&text) {
                        return text;
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                let seen = match self.client.find(Locator::Css(css)).await {
                    Ok(element) => element.text().await.unwrap_or_default(),
                    Err(_) => "(absent)".into(),
                };
                self.screenshot("timeout").await;
                panic!("{css} did not reach the expected text within {timeout:?}; it shows {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Saves a PNG of the window as `NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}
