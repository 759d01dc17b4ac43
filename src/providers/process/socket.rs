//! Whose socket is it: the listener on a function's port must belong to the function's own
//! process group (netlink's socket diagnostics and `/proc` on Linux), and a free port to give a
//! function.

use std::net::{Ipv4Addr, TcpListener};

/// Whether the socket listening on `port` belongs to a process of the group `group`. On
/// Linux: the listening socket's inode (netlink, `/proc/net/tcp` as fallback), then the
/// group's open files in `/proc`. Elsewhere, an open port is taken on trust.
pub(super) fn listens_in_group(port: u16, group: Option<u32>) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some(group) = group else { return false };
        // Netlink asks the kernel for listening sockets only (microseconds); /proc/net/tcp
        // lists every socket of the host, TIME_WAIT included (tens of milliseconds on a busy
        // one), and is the fallback.
        let inodes = sock_diag::listening_inodes(port).unwrap_or_else(|_| listening_inodes(port));
        if inodes.is_empty() {
            return false;
        }
        group_holds_socket(group, &inodes)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (port, group);
        true
    }
}

/// The inodes of the sockets listening on `port`, asked of the kernel through netlink
/// (`NETLINK_SOCK_DIAG`, as `ss` does): a dump of TCP sockets in state LISTEN only, IPv4 and
/// IPv6, filtered by port here.
#[cfg(target_os = "linux")]
mod sock_diag {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    const HEADER: usize = 16;

    pub(super) fn listening_inodes(port: u16) -> nix::Result<Vec<u64>> {
        let mut inodes = Vec::new();
        for family in [libc_af(AddressFamily::Inet), libc_af(AddressFamily::Inet6)] {
            dump(family, port, &mut inodes)?;
        }
        Ok(inodes)
    }

    fn libc_af(family: AddressFamily) -> u8 {
        family as i32 as u8
    }

    fn dump(family: u8, port: u16, inodes: &mut Vec<u64>) -> nix::Result<()> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes), native-endian.
        let mut request = Vec::with_capacity(72);
        request.extend_from_slice(&72u32.to_ne_bytes());
        request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        request.extend_from_slice(&[0; 8]); // sequence number, port id
        request.extend_from_slice(&[family, 6 /* TCP */, 0, 0]);
        request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        request.extend_from_slice(&[0; 48]); // inet_diag_sockid: unused by a dump
        sendto(
            fd.as_raw_fd(),
            &request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let len = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
            let mut at = 0;
            while at + HEADER <= len {
                let word = |i: usize| u32::from_ne_bytes(buffer[i..i + 4].try_into().unwrap());
                let message_len = word(at) as usize;
                let kind = u16::from_ne_bytes([buffer[at + 4], buffer[at + 5]]);
                if message_len < HEADER || at + message_len > len {
                    return Err(nix::Error::EINVAL);
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return Err(nix::Error::EIO),
                    _ if message_len >= HEADER + 72 => {
                        // inet_diag_msg: the source port (big-endian) at 4, the inode at 68.
                        let msg = at + HEADER;
                        let sport = u16::from_be_bytes([buffer[msg + 4], buffer[msg + 5]]);
                        if sport == port {
                            inodes.push(u64::from(word(msg + 68)));
                        }
                    }
                    _ => {}
                }
                at += (message_len + 3) & !3;
            }
            if len == 0 {
                return Ok(());
            }
        }
    }
}

/// The inodes of the sockets listening on `port` (any address), from `/proc/net/tcp{,6}`.
#[cfg(target_os = "linux")]
fn listening_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == LISTEN {
                if let Ok(inode) = inode.parse() {
                    inodes.push(inode);
                }
            }
        }
    }
    inodes
}

/// Whether a process whose process group is `group` has one of `inodes` open. The group's
/// first process (its id is the group's) is looked at first: it is the listener unless a
/// wrapper forked a worker, so the scan of every process is the rare case.
#[cfg(target_os = "linux")]
fn group_holds_socket(group: u32, inodes: &[u64]) -> bool {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let holds = |pid: &str| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|link| wanted.iter().any(|w| link.as_os_str() == w.as_str()))
            })
        })
    };
    let leader = group.to_string();
    if process_group_of(&leader) == Some(group) && holds(&leader) {
        return true;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|entry| {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        pid != leader && process_group_of(pid) == Some(group) && holds(pid)
    })
}

/// The process group of `pid`: the fifth field of `/proc/{pid}/stat`, counted after the
/// command name (which may hold spaces and parentheses).
#[cfg(target_os = "linux")]
fn process_group_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

pub(super) fn free_port() -> std::io::Result<u16> {
    // The port is free now; another process could take it before the function binds it. The
    // readiness probe then finds the listener outside the function's group and never calls
    // the function ready; the function itself fails to bind and exits (502).
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn netlink_and_proc_find_the_same_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let by_netlink = sock_diag::listening_inodes(port).unwrap();
        assert_eq!(by_netlink.len(), 1);
        assert_eq!(by_netlink, listening_inodes(port));
        drop(listener);
        assert!(sock_diag::listening_inodes(port).unwrap().is_empty());
    }

    #[test]
    fn a_listener_of_this_process_is_found_in_its_group_only() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let own = process_group_of(&std::process::id().to_string()).unwrap();
        assert!(listens_in_group(port, Some(own)));
        assert!(!listens_in_group(port, Some(u32::MAX - 1)));
        drop(listener);
        assert!(!listens_in_group(port, Some(own)));
    }
}
