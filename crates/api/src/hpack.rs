//! Just enough HPACK (RFC 7541) to read a client's header blocks and write them back: a full
//! decoder, because the dynamic table must track every block the client sends, and an
//! encoder that writes literals only, so it never relies on what the server's decoder holds.

use std::collections::VecDeque;

use bytes::Bytes;

/// A header block that does not decode. The caller passes the bytes on untouched and lets the
/// HTTP/2 server refuse them with its own error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderField {
    pub name: Bytes,
    pub value: Bytes,
    /// The client asked that no intermediary ever index this field (RFC 7541 §6.2.3).
    pub never_indexed: bool,
}

/// A decoded header block: the table size updates it opens with, then its fields in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderBlock {
    pub table_size_updates: Vec<usize>,
    pub fields: Vec<HeaderField>,
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Bit length of each symbol's Huffman code, RFC 7541 Appendix B; symbol 256 is EOS. The code
/// is canonical, so the lengths alone determine every code.
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;
const MAX_CODE_BITS: usize = 30;

/// The canonical-code view of the Huffman table, for decoding a bit at a time: codes of one
/// length are consecutive, so a code is found from its length's first code and symbol offset.
struct HuffmanTable {
    first_code: [u32; MAX_CODE_BITS + 1],
    count: [u32; MAX_CODE_BITS + 1],
    offset: [u16; MAX_CODE_BITS + 1],
    symbols: [u16; 257],
}

const fn huffman_table() -> HuffmanTable {
    let mut table = HuffmanTable {
        first_code: [0; MAX_CODE_BITS + 1],
        count: [0; MAX_CODE_BITS + 1],
        offset: [0; MAX_CODE_BITS + 1],
        symbols: [0; 257],
    };
    let mut symbol = 0;
    while symbol < 257 {
        table.count[HUFFMAN_CODE_LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    let mut code = 0u32;
    let mut placed = 0u16;
    let mut length = 1;
    while length <= MAX_CODE_BITS {
        table.first_code[length] = code;
        table.offset[length] = placed;
        placed += table.count[length] as u16;
        code = (code + table.count[length]) << 1;
        length += 1;
    }
    // Symbols sorted by (length, symbol) is the canonical order.
    let mut next = table.offset;
    let mut symbol = 0;
    while symbol < 257 {
        let length = HUFFMAN_CODE_LENGTHS[symbol] as usize;
        table.symbols[next[length] as usize] = symbol as u16;
        next[length] += 1;
        symbol += 1;
    }
    table
}

static HUFFMAN: HuffmanTable = huffman_table();

fn huffman_decode(encoded: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut decoded = Vec::with_capacity(encoded.len() * 8 / 5);
    let mut code = 0u32;
    let mut length = 0usize;
    for byte in encoded {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            length += 1;
            let index = code.wrapping_sub(HUFFMAN.first_code[length]);
            if index < HUFFMAN.count[length] {
                let symbol = HUFFMAN.symbols[(HUFFMAN.offset[length] as u32 + index) as usize];
                if symbol == EOS {
                    return Err(Malformed);
                }
                decoded.push(symbol as u8);
                code = 0;
                length = 0;
            } else if length == MAX_CODE_BITS {
                return Err(Malformed);
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones (a prefix of EOS).
    if length >= 8 || code != (1 << length) - 1 {
        return Err(Malformed);
    }
    Ok(decoded)
}

/// Reads an integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1) from the front of `input`.
fn decode_integer(input: &mut &[u8], prefix_bits: u32) -> Result<usize, Malformed> {
    let (&first, rest) = input.split_first().ok_or(Malformed)?;
    *input = rest;
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let (&byte, rest) = input.split_first().ok_or(Malformed)?;
        *input = rest;
        // Anything past 28 bits of continuation is far beyond any limit a server sets.
        if shift > 28 {
            return Err(Malformed);
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Reads a string literal from the front of `input`, a view of `block`: a plain literal is a
/// slice of the block, so only a Huffman-coded one is copied.
fn decode_string(input: &mut &[u8], block: &Bytes) -> Result<Bytes, Malformed> {
    let huffman = input.first().ok_or(Malformed)? & 0x80 != 0;
    let length = decode_integer(input, 7)?;
    if length > input.len() {
        return Err(Malformed);
    }
    let start = block.len() - input.len();
    let (raw, rest) = input.split_at(length);
    *input = rest;
    if huffman {
        huffman_decode(raw).map(Bytes::from)
    } else {
        Ok(block.slice(start..start + length))
    }
}

fn encode_integer(out: &mut Vec<u8>, first_byte_flags: u8, prefix_bits: u32, value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// Writes `block` as literals that are never added to the server's dynamic table, naming a
/// field by its static-table index where there is one.
pub(crate) fn encode_literal_block(block: &HeaderBlock) -> Vec<u8> {
    let mut out = Vec::new();
    for &size in &block.table_size_updates {
        encode_integer(&mut out, 0x20, 5, size);
    }
    for field in &block.fields {
        let flags = if field.never_indexed { 0x10 } else { 0x00 };
        match STATIC_TABLE
            .iter()
            .position(|(name, _)| name.as_bytes() == field.name)
        {
            Some(index) => encode_integer(&mut out, flags, 4, index + 1),
            None => {
                out.push(flags);
                encode_string(&mut out, &field.name);
            }
        }
        encode_string(&mut out, &field.value);
    }
    out
}

/// The size RFC 7541 §4.1 charges an entry.
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// The decoding side of one connection: its dynamic table outlives every header block.
pub(crate) struct Decoder {
    /// Entries share their bytes with the blocks they came from: a field named by index costs
    /// a reference count, not a copy.
    dynamic: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max_size: usize,
    /// The most a table size update may ask for; HTTP/2's SETTINGS_HEADER_TABLE_SIZE.
    size_limit: usize,
}

impl Decoder {
    pub(crate) fn new(size_limit: usize) -> Self {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: size_limit,
            size_limit,
        }
    }

    pub(crate) fn decode(&mut self, encoded: &Bytes) -> Result<HeaderBlock, Malformed> {
        let mut input: &[u8] = encoded;
        let mut block = HeaderBlock::default();
        while let Some(&first) = input.first() {
            if first & 0x80 != 0 {
                let index = decode_integer(&mut input, 7)?;
                let (name, value) = self.entry(index)?;
                block.fields.push(HeaderField {
                    name,
                    value,
                    never_indexed: false,
                });
            } else if first & 0xc0 == 0x40 {
                let (name, value) = self.literal(&mut input, 6, encoded)?;
                self.insert(name.clone(), value.clone());
                block.fields.push(HeaderField {
                    name,
                    value,
                    never_indexed: false,
                });
            } else if first & 0xe0 == 0x20 {
                // Size updates may only open a block.
                if !block.fields.is_empty() {
                    return Err(Malformed);
                }
                let size = decode_integer(&mut input, 5)?;
                if size > self.size_limit {
                    return Err(Malformed);
                }
                self.max_size = size;
                self.evict_to(size);
                block.table_size_updates.push(size);
            } else {
                let never_indexed = first & 0x10 != 0;
                let (name, value) = self.literal(&mut input, 4, encoded)?;
                block.fields.push(HeaderField {
                    name,
                    value,
                    never_indexed,
                });
            }
        }
        Ok(block)
    }

    fn literal(
        &self,
        input: &mut &[u8],
        prefix_bits: u32,
        block: &Bytes,
    ) -> Result<(Bytes, Bytes), Malformed> {
        let name_index = decode_integer(input, prefix_bits)?;
        let name = if name_index == 0 {
            decode_string(input, block)?
        } else {
            self.entry(name_index)?.0
        };
        let value = decode_string(input, block)?;
        Ok((name, value))
    }

    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), Malformed> {
        match index {
            0 => Err(Malformed),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((
                    Bytes::from_static(name.as_bytes()),
                    Bytes::from_static(value.as_bytes()),
                ))
            }
            _ => self.dynamic.get(index - 62).cloned().ok_or(Malformed),
        }
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = entry_size(&name, &value);
        if size > self.max_size {
            // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.dynamic.push_front((name, value));
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let (name, value) = self
                .dynamic
                .pop_back()
                .expect("a table with a positive size has an entry");
            self.size -= entry_size(&name, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Bytes {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    fn fields(block: &HeaderBlock) -> Vec<(String, String)> {
        block
            .fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.to_vec()).unwrap(),
                    String::from_utf8(f.value.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn huffman_strings_from_the_rfc_decode() {
        assert_eq!(
            huffman_decode(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(),
            b"www.example.com"
        );
        assert_eq!(huffman_decode(&hex("a8eb 1064 9cbf")).unwrap(), b"no-cache");
        assert_eq!(
            huffman_decode(&hex("25a8 49e9 5bb8 e8b4 bf")).unwrap(),
            b"custom-value"
        );
    }

    #[test]
    fn huffman_padding_must_be_short_and_all_ones() {
        // "no-cache" with a zero bit in its padding.
        assert_eq!(huffman_decode(&hex("a8eb 1064 9cbe")), Err(Malformed));
        // A whole extra byte of ones is padding longer than 7 bits.
        assert_eq!(huffman_decode(&hex("a8eb 1064 9cbf ff")), Err(Malformed));
    }

    #[test]
    fn integers_with_continuation_bytes_decode() {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let bytes = hex("1f9a0a");
        let mut input: &[u8] = &bytes;
        assert_eq!(decode_integer(&mut input, 5), Ok(1337));
        assert!(input.is_empty());
        let mut out = Vec::new();
        encode_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, bytes);
    }

    /// RFC 7541 C.4: three requests with Huffman coding, sharing one dynamic table.
    #[test]
    fn the_rfc_request_sequence_decodes_with_a_shared_table() {
        let mut decoder = Decoder::new(4096);
        let first = decoder
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(
            fields(&first),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        let second = decoder
            .decode(&hex("8286 84be 5886 a8eb 1064 9cbf"))
            .unwrap();
        assert_eq!(
            fields(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        let third = decoder
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .unwrap();
        assert_eq!(
            fields(&third),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.size, 164);
    }

    #[test]
    fn a_small_table_evicts_the_oldest_entries() {
        let mut decoder = Decoder::new(4096);
        // A size update to 60 bytes: room for one entry of :authority + 15 bytes (57).
        decoder.decode(&hex("3f1d")).unwrap();
        decoder
            .decode(&hex("418c f1e3 c2e5 f23a 6ba0 ab90 f4ff"))
            .unwrap();
        decoder.decode(&hex("5886 a8eb 1064 9cbf")).unwrap();
        // The :authority entry was evicted to make room for cache-control.
        assert_eq!(
            fields(&decoder.decode(&hex("be")).unwrap()),
            pairs(&[("cache-control", "no-cache")])
        );
        assert_eq!(decoder.decode(&hex("bf")), Err(Malformed));
    }

    #[test]
    fn a_size_update_after_a_field_or_above_the_limit_is_refused() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(decoder.decode(&hex("82 20")), Err(Malformed));
        // 4097 with a 5-bit prefix.
        assert_eq!(decoder.decode(&hex("3f e2 1f")), Err(Malformed));
    }

    #[test]
    fn literal_blocks_decode_to_the_same_fields_and_leave_the_table_alone() {
        let block = HeaderBlock {
            table_size_updates: vec![2048],
            fields: vec![
                HeaderField {
                    name: Bytes::from_static(b":authority"),
                    value: Bytes::from_static(b"127.0.0.1:2379"),
                    never_indexed: false,
                },
                HeaderField {
                    name: Bytes::from_static(b"x-custom"),
                    value: vec![b'v'; 300].into(),
                    never_indexed: true,
                },
            ],
        };
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decoder
                .decode(&encode_literal_block(&block).into())
                .unwrap(),
            block
        );
        assert!(decoder.dynamic.is_empty());
    }
}
