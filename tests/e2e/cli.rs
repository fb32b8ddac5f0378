//! The command line: version, config validation errors naming file and key, exit codes.

use std::process::Command;

use edge_tests::{edge_bin, listening_addr, write_binary_config, TempDir};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(edge_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("edge "), "{out}");
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("serve") && out.contains("demo"), "{out}");
}

#[test]
fn bad_config_names_file_and_key_and_exits_non_zero() {
    let dir = TempDir::new("cli");
    let cases = [
        ("[limits]\nmax_head_bytes = 12\n", "limits.max_head_bytes"),
        ("[limits]\nmax_head_byte = 4096\n", "max_head_byte"),
        (
            "[server]\ntls_listen = \"localhost\"\n",
            "server.tls_listen",
        ),
        ("[tls]\nktls = \"sometimes\"\n", "sometimes"),
        ("[server\n", "TOML"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = run(&["serve", "--config", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{text}");
        assert!(
            err.contains(&format!("bad{i}.toml")),
            "names the file: {err}"
        );
        assert!(
            err.to_lowercase().contains(&key.to_lowercase()),
            "names `{key}`: {err}"
        );
    }
    let (code, _, err) = run(&["serve", "--config", "/nonexistent/edge.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/edge.toml"), "{err}");
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../edge.example.toml");
    let (code, out, err) = run(&["serve", "--config", example, "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"), "{out}");
}

#[test]
fn start_up_errors_name_the_key() {
    let dir = TempDir::new("cli-root");
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ntls_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[content]\nroot = \"/nonexistent/www\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("content.root") && err.contains("/nonexistent/www"),
        "{err}"
    );
}

#[test]
fn several_workers_serve_and_sigterm_drains() {
    use std::io::{Read, Write};
    let dir = TempDir::new("cli-workers");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.ts"), b"segment").unwrap();
    let path = write_binary_config(dir.path(), &root, "worker_threads = 4");
    let mut child = Command::new(edge_bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = listening_addr(&mut child, "http");
    // Many short connections: the kernel spreads them over the four SO_REUSEPORT
    // listeners; every one must be answered.
    for _ in 0..40 {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.write_all(b"GET /a.ts HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n") && out.ends_with(b"segment"));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[test]
fn a_second_instance_on_the_same_port_fails() {
    let dir = TempDir::new("cli-twice");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    // Find a free port, then hold it with a first edge.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |n: u32| {
        let p = dir.path().join(format!("edge{n}.toml"));
        std::fs::write(
            &p,
            format!(
                "[server]\ntls_listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[content]\nroot = \"{}\"\n",
                dir.path().join(format!("state{n}")).display(),
                root.display()
            ),
        )
        .unwrap();
        p
    };
    let mut first = Command::new(edge_bin())
        .args(["serve", "--config", config(1).to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains(&format!("tls=127.0.0.1:{port}")), "{line}");
    let (code, _, err) = run(&["serve", "--config", config(2).to_str().unwrap()]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_ne!(code, 0, "the second instance must not start");
    assert!(
        err.contains("server.tls_listen") && err.to_lowercase().contains("in use"),
        "{err}"
    );
}
