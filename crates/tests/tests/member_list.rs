//! `MemberList` on a single member, as `etcdctl member list` prints it: the member's ID (the
//! one in every response header), name, peer URLs and advertised client URLs.

use cairn_tests::{Server, etcdctl, ok_stdout};

#[test]
fn member_list_names_the_single_member_with_its_urls() {
    let server = Server::start();
    let json = ok_stdout(&etcdctl(&server.endpoint(), &["get", "x", "-w", "json"]));
    let member_id: u64 = json
        .split("\"member_id\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no member_id in {json}"));

    let listed = ok_stdout(&etcdctl(&server.endpoint(), &["member", "list"]));
    let expected = format!(
        "{member_id:x}, started, cairn-test, {}, {}, false\n",
        server.peer_url(),
        server.url()
    );
    assert_eq!(listed, expected);
}
