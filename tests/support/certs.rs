//! Certificates a test creates (with the `openssl` command): a CA, a server
//! certificate it signed for the name `localhost` only (so `127.0.0.1` is a
//! host-name mismatch), and an unrelated CA that signed nothing the servers
//! present.

use super::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;

const CNF: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = syncline test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

pub struct Certs {
    dir: TempDir,
    /// The CA that signed the server certificate (PEM).
    pub ca: PathBuf,
    /// A CA that signed nothing the servers present.
    pub other_ca: PathBuf,
    /// The server certificate and key (PEM), world-readable copies.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cannot run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn self_signed_ca(dir: &Path, name: &str) -> PathBuf {
    let subj = format!("/CN=syncline test CA {name}");
    let mut args = vec![
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca",
    ];
    args.extend(EC);
    args.extend(["-nodes", "-days", "3", "-subj", &subj]);
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    args.extend(["-keyout", &key, "-out", &pem]);
    openssl(dir, &args);
    dir.join(pem)
}

impl Certs {
    pub fn create() -> Certs {
        let dir = TempDir::new("certs");
        let d = dir.path();
        std::fs::write(d.join("openssl.cnf"), CNF).unwrap();
        let ca = self_signed_ca(d, "ca");
        let other_ca = self_signed_ca(d, "other");
        let mut args = vec!["req", "-new", "-config", "openssl.cnf"];
        args.extend(EC);
        args.extend([
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "server",
                "-out",
                "server.pem",
            ],
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in ["ca.pem", "other.pem", "server.pem", "server.key"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        Certs {
            ca,
            other_ca,
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        }
    }

    /// A copy of the server key that only `user` can read (Postgres
    /// refuses a key others can read), when the tests run as root.
    pub fn key_for(&self, user: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(format!("server-{user}.key"));
        std::fs::copy(&self.key, &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        if super::pg_server::is_root() {
            let ok = Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(&p)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {user} {}", p.display());
        }
        p
    }
}
