//! The real binary under Xvfb: it opens the window, explains the first sample, and a
//! screenshot of the screen shows it (not a blank or black window).
//!
//! Needs `Xvfb` and ImageMagick's `import` (CI installs both and sets
//! TRISCOPE_REQUIRE_XVFB=1 so this cannot skip there). The screenshot is kept in
//! `target/tmp/triscope-screenshot.png` for a human to look at.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn binary_opens_under_xvfb_and_shows_the_first_explanation() {
    if !(have("Xvfb") && have("import")) {
        assert!(
            std::env::var("TRISCOPE_REQUIRE_XVFB").is_err(),
            "TRISCOPE_REQUIRE_XVFB is set but Xvfb or ImageMagick's import is missing"
        );
        eprintln!("skipped: Xvfb and ImageMagick (import) are not installed");
        return;
    }
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gui-{}", std::process::id()));
    let runtime = tmp.join("runtime");
    std::fs::create_dir_all(&runtime).expect("tmp dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    // Xvfb picks a free display itself and writes its number to stdout once it accepts
    // connections (-displayfd): no collision with other servers or stale sockets of killed
    // ones, and no race with its start.
    let mut server = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1440x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Xvfb");
    let stdout = server.stdout.take().expect("Xvfb stdout");
    let xvfb = KillOnDrop(server);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let number = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("Xvfb reported no display within 30 s");
    let display = format!(":{}", number.trim());
    assert!(display.len() > 1, "Xvfb wrote no display number");

    let ready = tmp.join("ready");
    let log = std::fs::File::create(tmp.join("app.log")).expect("log");
    let app = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_triscope"))
            .args(["gui", "--device", "cpu", "--ready-file"])
            .arg(&ready)
            .env("DISPLAY", &display)
            .env("XDG_RUNTIME_DIR", &runtime)
            // A fresh home: no remembered state from a developer's own runs.
            .env("HOME", &tmp)
            .env("XDG_DATA_HOME", tmp.join("data"))
            .env("XDG_CONFIG_HOME", tmp.join("config"))
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start triscope"),
    );
    let mut app = app;
    wait_for("the first explanation", Duration::from_secs(300), || {
        if let Ok(Some(status)) = app.0.try_wait() {
            let log = std::fs::read_to_string(tmp.join("app.log")).unwrap_or_default();
            panic!("triscope exited with {status} before showing an explanation:\n{log}");
        }
        ready.exists()
    });
    // The overlay is presented a few frames after the ready file; under load that can take a
    // while, so take screenshots until one shows it (or give up after a minute).
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("triscope-screenshot.png");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let status = Command::new("import")
            .args(["-display", display.as_str(), "-window", "root"])
            .arg(&shot)
            .status()
            .expect("run import");
        assert!(status.success(), "import failed");
        match check_screenshot(&shot) {
            Ok(()) => break,
            Err(why) if Instant::now() > deadline => panic!("{why} ({})", shot.display()),
            Err(_) => {}
        }
    }
    drop(app);
    drop(xvfb);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn check_screenshot(path: &Path) -> Result<(), String> {
    let img = image::open(path).map_err(|e| e.to_string())?.to_rgb8();
    let n = (img.width() * img.height()) as f64;
    let lum: Vec<f64> = img
        .pixels()
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
        .collect();
    let mean = lum.iter().sum::<f64>() / n;
    let sd = (lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd <= 10.0 {
        return Err(format!(
            "the screen is flat (luminance sd {sd:.1}): blank window?"
        ));
    }
    // Jet's hot end: strongly red, little blue. The overlay puts some on screen; neither the
    // UI chrome nor a dermoscopy image alone has many such pixels.
    let hot = img
        .pixels()
        .filter(|p| p[0] > 180 && p[2] < 90 && (p[0] as i32 - p[1] as i32) > 60)
        .count();
    if hot <= 500 {
        return Err(format!("no Grad-CAM colours on screen ({hot} hot pixels)"));
    }
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    if distinct.len() <= 1000 {
        return Err(format!("only {} colours: no image shown", distinct.len()));
    }
    Ok(())
}
