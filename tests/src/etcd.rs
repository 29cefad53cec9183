//! A real etcd server (Debian's `etcd-server`) for tests and benchmarks:
//! loopback random ports, a temporary data directory, optional mutual TLS
//! with certificates made by `openssl`; killed and removed on drop.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed on drop (under /dev/shm when it exists: etcd's fsyncs are then cheap).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!(
            "manifold-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd (Debian's /usr/bin/etcd) on loopback random ports with a
/// temporary data directory; killed on drop, and by the kernel when the
/// thread that started it ends (so an aborted run leaves no server behind).
pub struct Etcd {
    child: Option<Child>,
    /// Client URL.
    pub url: String,
    peer_port: u16,
    metrics_port: u16,
    /// Data directory (kept across [`Etcd::restart`]).
    pub dir: TempDir,
    /// Certificates when serving TLS ([`Certs`]).
    tls: Option<PathBuf>,
}

/// A test CA with a server certificate for 127.0.0.1 and a client
/// certificate, made with openssl: `ca.pem`, `server.pem`, `server-key.pem`,
/// `client.pem`, `client-key.pem`.
pub struct Certs(pub TempDir);

impl Certs {
    /// Makes a fresh set in a temporary directory.
    pub fn generate() -> Self {
        let d = TempDir::new("certs");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&d.0)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=manifold-test-ca",
            ],
        ]
        .concat());
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            std::fs::write(
                d.0.join(format!("{name}.ext")),
                format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
            )
            .unwrap();
            let (key, csr, pem, ext) = (
                format!("{name}-key.pem"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            run(&[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ]);
        }
        Certs(d)
    }

    /// A file's path.
    pub fn path(&self, name: &str) -> String {
        self.0 .0.join(name).display().to_string()
    }
}

impl Etcd {
    /// A node cache directory for manifold-ipam (`etcd.cacheDir`) that goes
    /// with this server's temporary directory.
    pub fn node_cache_dir(&self) -> String {
        self.dir.0.join("node-cache").display().to_string()
    }

    /// Starts a server and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that speaks only TLS and wants client certificates of `certs`.
    pub fn start_tls(certs: &Certs) -> Self {
        Self::start_with(Some(certs.0 .0.clone()))
    }

    fn start_with(tls: Option<PathBuf>) -> Self {
        let dir = TempDir::new("etcd");
        let mut e = Etcd {
            child: None,
            url: String::new(),
            peer_port: free_port(),
            metrics_port: free_port(),
            dir,
            tls,
        };
        let scheme = if e.tls.is_some() { "https" } else { "http" };
        e.url = format!("{scheme}://127.0.0.1:{}", free_port());
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.0.join("etcd.log")).unwrap();
        let mut cmd = Command::new("/usr/bin/etcd");
        // SAFETY: only an async-signal-safe prctl between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Dies with the thread that started it, also when that thread's
                // process is killed or aborts (no Drop runs then).
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        if let Some(c) = &self.tls {
            cmd.arg("--cert-file")
                .arg(c.join("server.pem"))
                .arg("--key-file")
                .arg(c.join("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(c.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.0.join("data"))
            .args([
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", self.metrics_port),
            ])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd (Debian package etcd-server)");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.0.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited with {status}: {log}");
            }
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd on {} did not become healthy", self.url);
    }

    /// Asks the plain-HTTP metrics listener (served in TLS mode too) for `/health`.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// Kills the server (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
