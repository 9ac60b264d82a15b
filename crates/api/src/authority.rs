//! Client connections whose HTTP/2 `:authority` is a URL rather than `host:port`.
//!
//! etcdctl 3.4's `--cluster` commands dial each member's client URL as given, so grpc-go sends
//! `http://127.0.0.1:2379` as the `:authority`. Go's HTTP/2 server takes it; h2 resets the
//! stream with PROTOCOL_ERROR. So every client connection is read through an
//! [`AuthorityRewriter`], which decodes each header block the client sends and, when an
//! authority carries a scheme, hands h2 the block again with the authority cut to `host:port`.
//! Other frames, and connections that are not HTTP/2, pass through untouched.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::hpack::{Decoder, HeaderBlock, encode_literal_block};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;
/// The SETTINGS_MAX_FRAME_SIZE h2 keeps unless told otherwise, and the least any server may
/// set, so frames no larger are always accepted.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// h2's SETTINGS_HEADER_TABLE_SIZE, which tonic does not change.
const HEADER_TABLE_SIZE: usize = 4096;
/// The most of one header block held while its CONTINUATION frames arrive.
const MAX_HEADER_BLOCK: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// Returned when a block cannot be decoded after earlier blocks were rewritten: the server's
/// table no longer matches the client's, so the block cannot be passed on and the connection
/// must close.
#[derive(Debug)]
pub(crate) struct Desynchronised;

enum Mode {
    Preface,
    Frames,
    PassThrough,
}

/// A header block gathered from a HEADERS frame and its CONTINUATION frames.
struct PendingBlock {
    /// The frames as they came.
    original: BytesMut,
    /// Where the HEADERS frame's fragment lies in `original`.
    first_fragment: Range<usize>,
    /// The whole block, once CONTINUATION frames add to it. A block in one frame (nearly
    /// every one) is read in place instead.
    joined: Option<BytesMut>,
    stream_id: u32,
    /// The HEADERS frame's flags.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
}

/// The sans-I/O core: turns the bytes a client sent into the bytes h2 is given.
pub(crate) struct AuthorityRewriter {
    mode: Mode,
    decoder: Decoder,
    /// Set once a block has been rewritten. The blocks given to h2 no longer add entries to its
    /// dynamic table, so every later block must be rewritten too.
    rewriting: bool,
    /// Bytes of the current non-header frame still to pass on.
    passing: usize,
    pending: Option<PendingBlock>,
}

impl AuthorityRewriter {
    pub(crate) fn new() -> Self {
        AuthorityRewriter {
            mode: Mode::Preface,
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            rewriting: false,
            passing: 0,
            pending: None,
        }
    }

    fn is_pass_through(&self) -> bool {
        matches!(self.mode, Mode::PassThrough)
    }

    /// Moves every complete unit of `input` to `output`, leaving a partial frame in `input`.
    pub(crate) fn process(
        &mut self,
        input: &mut BytesMut,
        output: &mut VecDeque<Bytes>,
    ) -> Result<(), Desynchronised> {
        loop {
            match self.mode {
                Mode::PassThrough => {
                    if !input.is_empty() {
                        output.push_back(input.split().freeze());
                    }
                    return Ok(());
                }
                Mode::Preface => {
                    let seen = input.len().min(PREFACE.len());
                    if input[..seen] != PREFACE[..seen] {
                        self.mode = Mode::PassThrough;
                    } else if seen < PREFACE.len() {
                        return Ok(());
                    } else {
                        output.push_back(input.split_to(PREFACE.len()).freeze());
                        self.mode = Mode::Frames;
                    }
                }
                Mode::Frames => {
                    if self.passing > 0 {
                        if input.is_empty() {
                            return Ok(());
                        }
                        let n = self.passing.min(input.len());
                        output.push_back(input.split_to(n).freeze());
                        self.passing -= n;
                        continue;
                    }
                    if input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    if !self.next_frame(input, output)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles the frame at the front of `input`; false if it has not fully arrived.
    fn next_frame(
        &mut self,
        input: &mut BytesMut,
        output: &mut VecDeque<Bytes>,
    ) -> Result<bool, Desynchronised> {
        let length =
            (usize::from(input[0]) << 16) | (usize::from(input[1]) << 8) | usize::from(input[2]);
        let kind = input[3];
        let flags = input[4];
        let stream_id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        let in_block = self.pending.is_some();
        if !in_block && kind != HEADERS && kind != CONTINUATION {
            self.passing = FRAME_HEADER_LEN + length;
            return Ok(true);
        }
        let out_of_order = (kind == CONTINUATION) != in_block
            || self
                .pending
                .as_ref()
                .is_some_and(|pending| pending.stream_id != stream_id);
        if out_of_order || length > MAX_FRAME_PAYLOAD {
            // A protocol error: let h2 see the frames as sent and report it.
            self.give_up(output)?;
            return Ok(true);
        }
        if input.len() < FRAME_HEADER_LEN + length {
            return Ok(false);
        }
        let frame = input.split_to(FRAME_HEADER_LEN + length);
        if kind == HEADERS {
            let Some((priority, fragment)) =
                split_headers_payload(&frame[FRAME_HEADER_LEN..], flags)
            else {
                self.pass_on(frame, output)?;
                return Ok(true);
            };
            self.pending = Some(PendingBlock {
                original: frame,
                first_fragment: FRAME_HEADER_LEN + fragment.start..FRAME_HEADER_LEN + fragment.end,
                joined: None,
                stream_id,
                flags,
                priority,
            });
        } else {
            let pending = self
                .pending
                .as_mut()
                .expect("a CONTINUATION is taken only inside a block");
            let joined = pending.joined.get_or_insert_with(|| {
                BytesMut::from(&pending.original[pending.first_fragment.clone()])
            });
            joined.extend_from_slice(&frame[FRAME_HEADER_LEN..]);
            pending.original.unsplit(frame);
        }
        let too_big = self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.original.len() > MAX_HEADER_BLOCK);
        if too_big {
            self.give_up(output)?;
        } else if flags & END_HEADERS != 0 {
            self.finish_block(output)?;
        }
        Ok(true)
    }

    /// Stops looking at this connection: what is held goes on as it came.
    fn give_up(&mut self, output: &mut VecDeque<Bytes>) -> Result<(), Desynchronised> {
        let held = self.pending.take().map(|pending| pending.original);
        self.pass_on(held.unwrap_or_default(), output)
    }

    /// Stops looking at this connection, after passing on `held` as it came.
    fn pass_on(
        &mut self,
        held: impl Into<Bytes>,
        output: &mut VecDeque<Bytes>,
    ) -> Result<(), Desynchronised> {
        if self.rewriting {
            return Err(Desynchronised);
        }
        let held = held.into();
        if !held.is_empty() {
            output.push_back(held);
        }
        self.mode = Mode::PassThrough;
        Ok(())
    }

    fn finish_block(&mut self, output: &mut VecDeque<Bytes>) -> Result<(), Desynchronised> {
        let pending = self
            .pending
            .take()
            .expect("a block is finished only while one is held");
        let original = pending.original.freeze();
        let fragments = match pending.joined {
            Some(joined) => joined.freeze(),
            None => original.slice(pending.first_fragment),
        };
        let Ok(mut block) = self.decoder.decode(&fragments) else {
            return self.pass_on(original, output);
        };
        if !mend_authority(&mut block) && !self.rewriting {
            output.push_back(original);
            return Ok(());
        }
        self.rewriting = true;
        output.push_back(header_frames(
            pending.stream_id,
            pending.flags & END_STREAM,
            pending.priority,
            &encode_literal_block(&block),
        ));
        Ok(())
    }
}

/// A HEADERS payload without its padding: the priority fields, if any, and the block fragment.
fn split_headers_payload(
    payload: &[u8],
    flags: u8,
) -> Option<(Option<[u8; PRIORITY_LEN]>, Range<usize>)> {
    let mut body = payload;
    let mut padding = 0;
    if flags & PADDED != 0 {
        let (&pad, rest) = body.split_first()?;
        padding = usize::from(pad);
        body = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let (fields, rest) = body.split_at_checked(PRIORITY_LEN)?;
        priority = Some(fields.try_into().expect("split at PRIORITY_LEN"));
        body = rest;
    }
    let fragment_len = body.len().checked_sub(padding)?;
    let start = payload.len() - body.len();
    Some((priority, start..start + fragment_len))
}

/// Cuts an `:authority` that is a URL down to its `host:port`; true if any was cut.
fn mend_authority(block: &mut HeaderBlock) -> bool {
    let mut mended = false;
    for field in &mut block.fields {
        if field.name != b":authority"[..] {
            continue;
        }
        let Some(scheme_end) = field.value.windows(3).position(|w| w == b"://") else {
            continue;
        };
        let rest = &field.value[scheme_end + 3..];
        let host_len = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
        field.value = field.value.slice(scheme_end + 3..scheme_end + 3 + host_len);
        mended = true;
    }
    mended
}

/// A header block as one HEADERS frame and as many CONTINUATION frames as it needs.
fn header_frames(
    stream_id: u32,
    end_stream: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    block: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(block.len() + 2 * FRAME_HEADER_LEN + PRIORITY_LEN);
    let mut rest = block;
    let mut first = true;
    loop {
        let priority = if first { priority } else { None };
        let room = MAX_FRAME_PAYLOAD - priority.map_or(0, |p| p.len());
        let (chunk, tail) = rest.split_at(rest.len().min(room));
        let (kind, mut flags) = if first {
            (
                HEADERS,
                end_stream | if priority.is_some() { PRIORITY } else { 0 },
            )
        } else {
            (CONTINUATION, 0)
        };
        if tail.is_empty() {
            flags |= END_HEADERS;
        }
        let length = chunk.len() + priority.map_or(0, |p| p.len());
        out.put_uint(length as u64, 3);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_u32(stream_id);
        if let Some(fields) = priority {
            out.put_slice(&fields);
        }
        out.put_slice(chunk);
        if tail.is_empty() {
            return out.freeze();
        }
        rest = tail;
        first = false;
    }
}

/// A client connection as h2 reads it: through an [`AuthorityRewriter`]. Writes go straight
/// to the socket.
pub(crate) struct RewrittenConnection<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    input: BytesMut,
    output: VecDeque<Bytes>,
}

impl<S> RewrittenConnection<S> {
    pub(crate) fn new(inner: S) -> Self {
        RewrittenConnection {
            inner,
            rewriter: AuthorityRewriter::new(),
            input: BytesMut::new(),
            output: VecDeque::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RewrittenConnection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(front) = this.output.front_mut() {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                front.advance(n);
                if front.is_empty() {
                    this.output.pop_front();
                }
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_pass_through() && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.input.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if read == 0 {
                // End of stream; a partial frame left in `input` is of no use to h2.
                return Poll::Ready(Ok(()));
            }
            this.rewriter
                .process(&mut this.input, &mut this.output)
                .map_err(|Desynchronised| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "undecodable header block after a rewritten :authority",
                    )
                })?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RewrittenConnection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for RewrittenConnection<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::HeaderField;

    const SETTINGS: u8 = 0x4;
    const DATA: u8 = 0x0;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A block as grpc-go first sends it: `:authority` added to the dynamic table.
    fn indexed_authority_block(authority: &str) -> Vec<u8> {
        let mut block = vec![0x83, 0x86, 0x41, authority.len() as u8];
        block.extend_from_slice(authority.as_bytes());
        block.extend_from_slice(&[0x44, 0x04]);
        block.extend_from_slice(b"/a.b");
        block
    }

    /// Feeds `input` in pieces of `chunk` bytes and returns all that was passed on.
    fn rewrite(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut rewriter = AuthorityRewriter::new();
        let mut pending = BytesMut::new();
        let mut output = VecDeque::new();
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            rewriter
                .process(&mut pending, &mut output)
                .expect("in sync");
        }
        assert!(pending.is_empty(), "every complete frame is passed on");
        output.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// The frames after the preface: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        let mut rest = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let length =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], stream, rest[9..9 + length].to_vec()));
            rest = &rest[9 + length..];
        }
        out
    }

    fn authorities(decoder: &mut Decoder, block: &[u8]) -> Vec<Vec<u8>> {
        decoder
            .decode(&Bytes::copy_from_slice(block))
            .expect("decodes")
            .fields
            .into_iter()
            .filter(|f| f.name == b":authority"[..])
            .map(|f| f.value.to_vec())
            .collect()
    }

    fn connection(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        for (i, block) in blocks.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            input.extend(frame(HEADERS, END_HEADERS, stream, block));
            input.extend(frame(DATA, END_STREAM, stream, b"\0\0\0\0\x02hi"));
        }
        input
    }

    #[test]
    fn a_url_authority_is_cut_to_host_and_port_in_every_later_block() {
        // The second block names the authority by its dynamic-table index only.
        let input = connection(&[
            indexed_authority_block("http://127.0.0.1:2379"),
            vec![0x83, 0x86, 0xbf, 0xbe],
        ]);
        for chunk in [1, 7, input.len()] {
            let output = frames(&rewrite(&input, chunk));
            let input_frames = frames(&input);
            assert_eq!(output.len(), input_frames.len());
            let mut decoder = Decoder::new(HEADER_TABLE_SIZE);
            for (got, sent) in output.iter().zip(&input_frames) {
                assert_eq!((got.0, got.1, got.2), (sent.0, sent.1, sent.2));
                if got.0 == HEADERS {
                    assert_eq!(
                        authorities(&mut decoder, &got.3),
                        vec![Bytes::from_static(b"127.0.0.1:2379")]
                    );
                } else {
                    assert_eq!(got.3, sent.3, "other frames pass unchanged");
                }
            }
        }
    }

    #[test]
    fn connections_without_a_url_authority_pass_byte_for_byte() {
        let input = connection(&[
            indexed_authority_block("127.0.0.1:2379"),
            vec![0x83, 0x86, 0xbf, 0xbe],
        ]);
        assert_eq!(rewrite(&input, 5), input);
        let http1 = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n";
        assert_eq!(rewrite(http1, 3), http1);
    }

    #[test]
    fn a_padded_prioritised_block_in_continuations_keeps_its_stream_and_priority() {
        let block = indexed_authority_block("https://10.0.0.1:2379/");
        let (head, tail) = block.split_at(6);
        let mut payload = vec![3];
        payload.extend_from_slice(&[0, 0, 0, 1, 200]);
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, tail));
        let output = frames(&rewrite(&input, 4));
        assert_eq!(output.len(), 1);
        let (kind, flags, stream, payload) = &output[0];
        assert_eq!(
            (*kind, *flags, *stream),
            (HEADERS, PRIORITY | END_STREAM | END_HEADERS, 3)
        );
        assert_eq!(&payload[..PRIORITY_LEN], &[0, 0, 0, 1, 200]);
        let mut decoder = Decoder::new(HEADER_TABLE_SIZE);
        assert_eq!(
            authorities(&mut decoder, &payload[PRIORITY_LEN..]),
            vec![Bytes::from_static(b"10.0.0.1:2379")]
        );
    }

    #[test]
    fn a_rewritten_block_larger_than_a_frame_is_split_into_continuations() {
        let block = HeaderBlock {
            table_size_updates: Vec::new(),
            fields: vec![
                HeaderField {
                    name: Bytes::from_static(b":authority"),
                    value: Bytes::from_static(b"http://127.0.0.1:2379"),
                    never_indexed: false,
                },
                HeaderField {
                    name: Bytes::from_static(b"x-big"),
                    value: vec![b'x'; 40_000].into(),
                    never_indexed: false,
                },
            ],
        };
        let encoded = encode_literal_block(&block);
        let mut input = PREFACE.to_vec();
        for piece in encoded.chunks(MAX_FRAME_PAYLOAD).enumerate() {
            let (kind, flags) = match piece.0 {
                0 => (HEADERS, 0),
                _ => (CONTINUATION, 0),
            };
            let last = (piece.0 + 1) * MAX_FRAME_PAYLOAD >= encoded.len();
            input.extend(frame(
                kind,
                flags | if last { END_HEADERS } else { 0 },
                1,
                piece.1,
            ));
        }
        let output = frames(&rewrite(&input, 1000));
        assert!(output.len() >= 3);
        assert!(output.iter().all(|f| f.3.len() <= MAX_FRAME_PAYLOAD));
        assert_eq!(output.last().expect("frames").1, END_HEADERS);
        let joined: Vec<u8> = output.iter().flat_map(|f| f.3.clone()).collect();
        let decoded = Decoder::new(HEADER_TABLE_SIZE)
            .decode(&joined.into())
            .expect("decodes");
        assert_eq!(decoded.fields[0].value, b"127.0.0.1:2379"[..]);
        assert_eq!(decoded.fields[1].value.len(), 40_000);
    }

    #[test]
    fn an_undecodable_block_before_any_rewrite_is_left_for_h2_to_refuse() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        input.extend(frame(DATA, 0, 1, b"x"));
        assert_eq!(rewrite(&input, 3), input);
    }

    #[test]
    fn an_undecodable_block_after_a_rewrite_closes_the_connection() {
        let mut input = connection(&[indexed_authority_block("http://127.0.0.1:2379")]);
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        let mut rewriter = AuthorityRewriter::new();
        let mut output = VecDeque::new();
        let result = rewriter.process(&mut BytesMut::from(&input[..]), &mut output);
        assert!(result.is_err());
    }
}
