//! The plain-HTTP body path is zero-copy: the real binary under `strace -f` sends a
//! 16 MiB file with `sendfile` and never `read`s or `pread`s it.

use std::process::{Command, Stdio};

use edge_tests::{
    edge_bin, listening_addr, pattern, sha256_hex, write_binary_config, Client, TempDir,
};
use tokio::net::TcpStream;

/// One syscall line of `strace -f` output: `PID name(args) = ret`.
struct Call<'a> {
    name: &'a str,
    args: &'a str,
    ret: i64,
}

fn parse_line(line: &str) -> Option<Call<'_>> {
    let rest = line.split_once(' ').map(|(_, r)| r.trim_start())?;
    let open = rest.find('(')?;
    let name = &rest[..open];
    let eq = rest.rfind(") = ")?;
    let args = &rest[open + 1..eq];
    let ret = rest[eq + 4..].split_whitespace().next()?.parse().ok()?;
    Some(Call { name, args, ret })
}

/// Merges `strace -ff -ttt -o LOG` output (`LOG.PID` files) into one text of
/// `PID call...` lines in time order.
fn merge_per_thread_logs(log: &std::path::Path) -> String {
    let dir = log.parent().unwrap();
    let stem = format!("{}.", log.file_name().unwrap().to_string_lossy());
    let mut lines: Vec<(f64, String)> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&stem) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.lines() {
            if let Some((ts, call)) = line.split_once(' ') {
                if let Ok(t) = ts.parse::<f64>() {
                    lines.push((t, format!("{pid} {call}")));
                }
            }
        }
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// Kills the traced server (and strace) if the test fails half-way.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P"])
            .arg(self.0.to_string())
            .status();
        let _ = Command::new("kill")
            .args(["-KILL"])
            .arg(self.0.to_string())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_body_leaves_through_sendfile_only() {
    let dir = TempDir::new("strace");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let data = pattern(16 << 20, 3);
    std::fs::write(root.join("big.bin"), &data).unwrap();
    let config = write_binary_config(dir.path(), &root, "");
    let log = dir.path().join("strace.log");
    let mut child = Command::new("strace")
        // One file per thread (-ff) with timestamps, merged below: with -f alone a
        // call another thread interrupts is split into "unfinished"/"resumed" lines.
        .args(["-ff", "-ttt", "-qq", "-e", "trace=openat,openat2,read,pread64,readv,preadv,preadv2,sendfile,write,writev,sendto,sendmsg,splice", "-o"])
        .arg(&log)
        .arg(edge_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace must be installed (tests/run-all.sh installs it)");
    let guard = KillOnDrop(child.id());
    let http = listening_addr(&mut child, "http");

    let mut c = Client::new(TcpStream::connect(http).await.unwrap());
    let r = c.get("/big.bin", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    drop(c);
    // SIGTERM to edge (strace's child; strace itself blocks fatal signals when it
    // runs a program with -o): the server drains and exits, then strace does.
    Command::new("pkill")
        .args(["-TERM", "-P"])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    drop(guard);

    let text = merge_per_thread_logs(&log);
    let mut file_fd: Option<i64> = None;
    let mut sendfile_bytes = 0i64;
    let mut head_bytes_written = 0i64;
    for line in text.lines() {
        let Some(call) = parse_line(line) else {
            continue;
        };
        match call.name {
            "openat" | "openat2" if call.args.contains("big.bin") => file_fd = Some(call.ret),
            _ if file_fd.is_none() => {}
            "read" | "pread64" | "readv" | "preadv" | "preadv2" => {
                let fd: i64 = call.args.split(',').next().unwrap().trim().parse().unwrap();
                assert_ne!(
                    Some(fd),
                    file_fd,
                    "the file was read into userspace: {line}"
                );
            }
            "sendfile" => {
                let src: i64 = call.args.split(',').nth(1).unwrap().trim().parse().unwrap();
                assert_eq!(Some(src), file_fd, "{line}");
                sendfile_bytes += call.ret.max(0);
            }
            "write" | "writev" | "sendto" | "sendmsg" => head_bytes_written += call.ret.max(0),
            _ => {}
        }
    }
    assert!(
        file_fd.is_some(),
        "the server never opened the file:\n{text}"
    );
    assert_eq!(
        sendfile_bytes,
        16 << 20,
        "all body bytes left through sendfile"
    );
    assert!(
        head_bytes_written < 4096,
        "only the response head went through write/send: {head_bytes_written}"
    );
}
