//! `-w table`: olekukonko/tablewriter as etcdctl 3.4 configures it (upper-case centred
//! headers, cells aligned right, `+---+` borders, cells wider than 30 columns wrapped at
//! spaces with tablewriter's minimum-raggedness line breaking).

use cairn_proto::etcdserverpb::MemberListResponse;

use super::{
    EpHashKv, EpHealth, EpStatus, endpoint_hashkv_rows, endpoint_health_rows, endpoint_status_rows,
    member_list_rows,
};

fn width(s: &str) -> usize {
    s.chars().count()
}

/// tablewriter's default maximum column width before wrapping.
const MAX_COL_WIDTH: usize = 30;

/// tablewriter's `WrapWords`: splits `words` into lines of at most `lim` columns (words
/// separated by one space) with the least raggedness, the sum of squared shortfalls.
fn wrap_words(words: &[&str], lim: usize) -> Vec<String> {
    const PENALTY: i64 = 100_000;
    let n = words.len();
    let lim = lim as i64;
    let mut length = vec![vec![0i64; n]; n];
    for i in 0..n {
        length[i][i] = width(words[i]) as i64;
        for j in i + 1..n {
            length[i][j] = length[i][j - 1] + 1 + width(words[j]) as i64;
        }
    }
    let mut nbrk = vec![0usize; n];
    let mut cost = vec![i64::from(i32::MAX); n];
    for i in (0..n).rev() {
        if length[i][n - 1] <= lim {
            cost[i] = 0;
            nbrk[i] = n;
        } else {
            for j in i + 1..n {
                let d = lim - length[i][j - 1];
                let mut c = d * d + cost[j];
                if length[i][j - 1] > lim {
                    c += PENALTY;
                }
                if c < cost[i] {
                    cost[i] = c;
                    nbrk[i] = j;
                }
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        let next = nbrk[i].max(i + 1);
        lines.push(words[i..next].join(" "));
        i = next;
    }
    lines
}

/// tablewriter's `WrapString`: a longer word widens the limit.
fn wrap_string(cell: &str, lim: usize) -> Vec<String> {
    let words: Vec<&str> = cell.split(' ').collect();
    let lim = words.iter().map(|w| width(w)).fold(lim, usize::max);
    wrap_words(&words, lim)
}

/// Renders a table; `hdr` is upper-cased as tablewriter's `Title` does.
pub fn render(hdr: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let hdr: Vec<String> = hdr
        .iter()
        .map(|h| h.replace('_', " ").trim().to_uppercase())
        .collect();
    // tablewriter's parseDimension, cell by cell in order: the column is at least as wide
    // as the cell (up to 30), the cell is wrapped at the column's width so far, and the
    // column grows to its widest line.
    let mut widths: Vec<usize> = hdr.iter().map(|h| width(h).min(MAX_COL_WIDTH)).collect();
    let rows: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    let Some(w) = widths.get_mut(i) else {
                        return vec![cell.clone()];
                    };
                    *w = (*w).max(width(cell).min(MAX_COL_WIDTH));
                    let lines = wrap_string(cell, *w);
                    for l in &lines {
                        *w = (*w).max(width(l));
                    }
                    lines
                })
                .collect()
        })
        .collect();
    let line: String = {
        let mut l = String::from("+");
        for w in &widths {
            l.push_str(&"-".repeat(w + 2));
            l.push('+');
        }
        l.push('\n');
        l
    };
    let mut out = String::new();
    out.push_str(&line);
    out.push('|');
    for (h, w) in hdr.iter().zip(&widths) {
        let gap = w - width(h);
        let left = gap / 2;
        out.push_str(&format!(
            " {}{}{} |",
            " ".repeat(left),
            h,
            " ".repeat(gap - left)
        ));
    }
    out.push('\n');
    out.push_str(&line);
    for row in &rows {
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            out.push('|');
            for (i, w) in widths.iter().enumerate() {
                let cell = row
                    .get(i)
                    .and_then(|lines| lines.get(line))
                    .map(String::as_str)
                    .unwrap_or("");
                out.push_str(&format!(" {}{} |", " ".repeat(w - width(cell)), cell));
            }
            out.push('\n');
        }
    }
    out.push_str(&line);
    out.into_bytes()
}

pub fn endpoint_health(hs: &[EpHealth]) -> Vec<u8> {
    let (hdr, rows) = endpoint_health_rows(hs);
    render(&hdr, &rows)
}

pub fn endpoint_status(st: &[EpStatus]) -> Vec<u8> {
    let (hdr, rows) = endpoint_status_rows(st);
    render(&hdr, &rows)
}

pub fn endpoint_hashkv(hs: &[EpHashKv]) -> Vec<u8> {
    let (hdr, rows) = endpoint_hashkv_rows(hs);
    render(&hdr, &rows)
}

pub fn member_list(r: &MemberListResponse) -> Vec<u8> {
    let (hdr, rows) = member_list_rows(&r.members);
    render(&hdr, &rows)
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;
    use std::time::Duration;

    /// Verified against etcdctl 3.4.23 (`endpoint status -w table`).
    #[test]
    fn status_table() {
        let st = [EpStatus {
            ep: "127.0.0.1:23790".into(),
            resp: td::status(),
        }];
        assert_eq!(
            String::from_utf8(endpoint_status(&st)).unwrap(),
            "\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:23790 | 2e1259d415f2a040 |  3.4.23 |   25 kB |      true |      false |         2 |         39 |                 39 |        |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
"
        );
    }

    /// Verified against etcdctl 3.4.23 (`endpoint health -w table`).
    #[test]
    fn health_table() {
        let hs = [EpHealth {
            ep: "127.0.0.1:23790".into(),
            health: true,
            took: Duration::from_nanos(1_471_160),
            error: String::new(),
        }];
        assert_eq!(
            String::from_utf8(endpoint_health(&hs)).unwrap(),
            "\
+-----------------+--------+-----------+-------+
|    ENDPOINT     | HEALTH |   TOOK    | ERROR |
+-----------------+--------+-----------+-------+
| 127.0.0.1:23790 |   true | 1.47116ms |       |
+-----------------+--------+-----------+-------+
"
        );
    }

    /// Verified against etcdctl 3.4.23 on an etcd with a NOSPACE alarm.
    #[test]
    fn long_cells_wrap() {
        let mut resp = td::status();
        resp.errors = vec!["memberID:15620605431212779891 alarm:NOSPACE ".into()];
        let st = [EpStatus {
            ep: "127.0.0.1:23794".into(),
            resp,
        }];
        let out = String::from_utf8(endpoint_status(&st)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[1].ends_with("|             ERRORS             |"));
        assert!(lines[3].ends_with("|  memberID:15620605431212779891 |"));
        assert_eq!(
            lines[4],
            "|                 |                  |         |         |           |            |           |            |                    |                 alarm:NOSPACE  |"
        );
        assert_eq!(wrap_words(&["aaaa", "bb", "cc"], 7), vec!["aaaa bb", "cc"]);
        assert_eq!(
            wrap_words(&["aaaa", "bbbbbb", "c"], 7),
            vec!["aaaa", "bbbbbb", "c"]
        );
    }

    /// Verified against etcdctl 3.4.23 (`member list -w table`).
    #[test]
    fn member_table() {
        assert_eq!(
            String::from_utf8(member_list(&td::member_list())).unwrap(),
            "\
+------------------+-----------+------+-----------------------------------------------+------------------------+------------+
|        ID        |  STATUS   | NAME |                  PEER ADDRS                   |      CLIENT ADDRS      | IS LEARNER |
+------------------+-----------+------+-----------------------------------------------+------------------------+------------+
| 4036b1db24775ea0 |   started |   m1 |                        http://127.0.0.1:23801 | http://127.0.0.1:23791 |      false |
| b7913ad97e9cfb5b | unstarted |      | http://127.0.0.1:23804,http://127.0.0.1:23805 |                        |       true |
+------------------+-----------+------+-----------------------------------------------+------------------------+------------+
"
        );
    }

    #[test]
    fn empty_table() {
        assert_eq!(
            String::from_utf8(endpoint_status(&[]))
                .unwrap()
                .lines()
                .count(),
            4
        );
    }
}
