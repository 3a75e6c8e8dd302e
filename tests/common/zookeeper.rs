//! A real ZooKeeper for the discovery tests: Debian's `zookeeper` package,
//! run by `tests/zookeeper/serve` in the foreground on a free loopback port
//! with a temporary data directory, and killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long ZooKeeper (a JVM) may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ZooKeeper {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl ZooKeeper {
    /// Starts a ZooKeeper on a free port with a fresh data directory.
    pub fn start() -> ZooKeeper {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut zk = ZooKeeper::start_on(temp.path(), free_port());
        zk._temp = Some(temp);
        zk
    }

    /// Starts a ZooKeeper on `port` keeping its data in `dir` (to restart one
    /// with its sessions and nodes).
    pub fn start_on(dir: &Path, port: u16) -> ZooKeeper {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|d| d.join("tests/zookeeper/serve"))
            .find(|p| p.exists())
            .expect("tests/zookeeper/serve in the workspace");
        let child = Command::new(script)
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/zookeeper/serve (is Debian's zookeeper installed?)");
        let mut zk = ZooKeeper {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            _temp: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !zk.ok() {
            if let Some(status) = zk.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("ZooKeeper exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        zk
    }

    /// The connect string.
    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether it answers `ruok` with `imok`.
    fn ok(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = String::new();
        s.write_all(b"ruok").is_ok() && s.read_to_string(&mut reply).is_ok() && reply == "imok"
    }

    /// Kills it at once (SIGKILL): its clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
