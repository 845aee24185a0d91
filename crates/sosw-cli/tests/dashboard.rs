//! The dashboard in headless Chromium (Debian's `chromium` and `chromium-driver`, through WebDriver): `sosw run`
//! with real process workers serves it; the page sees the counts change as tasks are created and invoked; its
//! Pause button stops dispatch — no invocation while paused — and Resume starts it again. A screenshot is saved in
//! the test's temp dir (and, with `SOSW_SCREENSHOT=PATH`, there).

// Deadlines for a real browser and daemon read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use common::Sandbox;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

/// Kills the child when dropped (a failed assertion must not leave a browser or a daemon behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The daemon's pass reports (`--json` lines on stdout), as they come.
fn reports(daemon: &mut Child) -> Receiver<Value> {
    let stdout = daemon.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits for `n` more Orchestrator passes; returns how many tasks of `labourer` they invoked.
fn passes(rx: &Receiver<Value>, labourer: &str, n: usize) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    let (mut seen, mut invoked) = (0, 0);
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = rx.recv_timeout(left).expect("the daemon keeps passing");
        if let Some(l) = r.get("orchestrator").map(|o| &o["labourers"][labourer]) {
            seen += 1;
            invoked += l["invoked"].as_u64().unwrap_or(0) + l["finished_sync"].as_u64().unwrap_or(0);
        }
    }
    invoked
}

async fn text_of(c: &fantoccini::Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

/// Polls the page until `css`'s text satisfies `ok` (the page updates itself every 2 s).
async fn until_text(c: &fantoccini::Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = text_of(c, css).await {
            if ok(&t) {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what} in `{css}` (now: {:?})",
            text_of(c, css).await
        );
        // A poll's pace, not a synchronisation: the condition above is what is waited for.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn number(text: &str) -> u64 {
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs Chromium and its WebDriver (SOSW_TEST_CHROMEDRIVER); `.ci/run` installs them and runs ignored tests"]
async fn the_dashboard_shows_live_counts_and_its_pause_button_stops_dispatch() {
    let Some(chromedriver) = sosw_testkit::service("SOSW_TEST_CHROMEDRIVER") else {
        return;
    };
    let chromium = std::env::var("SOSW_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    // Each task takes a second, two at a time: the page sees tasks queued and running.
    let s = Sandbox::new(json!({
        "task_config": {"labourers": {"resize": {
            "command": ["sh", "-c", "cat > /dev/null; sleep 1; echo '{\"ok\": true}'"],
            "max_simultaneous_invocations": 2
        }}},
        "daemon": {"orchestrator_interval": 0.2, "scavenger_interval": 0.2},
        "server": {}
    }));
    let mut daemon = s
        .cmd(&["--json", "run", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sosw run");
    let (base, _stderr) = common::api_base(daemon.stderr.take().expect("stderr"));
    let rx = reports(&mut daemon);
    let _daemon = Killed(daemon);

    let port = free_port();
    let driver = Killed(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
    );
    let deadline = Instant::now() + PATIENCE;
    let c = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                // chromedriver is starting: poll its port again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    c.goto(&format!("{base}/")).await.expect("load the dashboard");
    let row = "[data-labourer-row=\"resize\"]";
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(row))
        .await
        .expect("the labourer's row");

    // Tasks created: the page sees them queued and running.
    s.ok(&["task", "create", "resize", "--count", "8"]);
    until_text(&c, &format!("{row} [data-count=\"running\"]"), "running tasks", |t| {
        number(t) > 0
    })
    .await;
    // Pause from the page.
    c.find(Locator::Css("[data-action=\"pause\"][data-labourer=\"resize\"]"))
        .await
        .expect("the pause button")
        .click()
        .await
        .expect("click pause");
    // The page asks for a reason (optional) in a small form.
    let reason = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Id("pause-reason"))
        .await
        .expect("the pause form");
    reason.send_keys("testing the dashboard").await.expect("type a reason");
    c.find(Locator::Id("pause-confirm"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click confirm");
    until_text(&c, "[data-held=\"resize\"]", "the pause", |t| {
        t.to_lowercase().contains("paused")
    })
    .await;
    let stored = s.json(&["labourer", "show", "resize"]);
    assert_eq!(
        stored["status"]["control"]["paused"]["reason"], "testing the dashboard",
        "stored: {stored}"
    );
    // While paused: more tasks, and not one invocation over several passes. The reports read so far, and the one
    // pass that may have begun before the pause was stored, are passed over.
    while rx.try_recv().is_ok() {}
    passes(&rx, "resize", 1);
    s.ok(&["task", "create", "resize", "--count", "5"]);
    assert_eq!(passes(&rx, "resize", 5), 0, "no invocation while paused");
    until_text(&c, &format!("{row} [data-count=\"queued\"]"), "the queue", |t| {
        number(t) >= 5
    })
    .await;
    let png = c.screenshot().await.expect("screenshot");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dashboard.png"), &png).expect("save the screenshot");
    if let Ok(path) = std::env::var("SOSW_SCREENSHOT") {
        std::fs::write(path, &png).expect("save the screenshot where asked");
    }
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // Resume from the page: dispatch starts again.
    c.find(Locator::Css("[data-action=\"resume\"][data-labourer=\"resize\"]"))
        .await
        .expect("the resume button")
        .click()
        .await
        .expect("click resume");
    let deadline = Instant::now() + PATIENCE;
    while passes(&rx, "resize", 1) == 0 {
        assert!(Instant::now() < deadline, "dispatch never resumed");
    }
    c.close().await.expect("close the browser");
    drop(driver);
}
