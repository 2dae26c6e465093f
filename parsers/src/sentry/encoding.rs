//! Request bodies as SDKs compress them: `Content-Encoding` gzip, deflate
//! (zlib-wrapped or raw), br and zstd, and the base64 of zlib that old SDKs
//! send to `/store/` without any `Content-Encoding`.
//!
//! Every decoder reads its input through a bounded output: decoding stops as
//! soon as the output passes the caller's limit, so a decompression bomb
//! costs at most `limit` bytes of memory and the time to produce them, never
//! its nominal size. Nothing here reads the whole output first and checks
//! later.

use std::io::Read;

use base64::Engine;

use crate::ParseError;

const FORMAT: &str = "content_encoding";

/// The `Content-Encoding`s the endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    /// No encoding (also an empty header, `identity` and the `UTF-8` some
    /// SDKs send by mistake).
    Identity,
    /// gzip, one or more members.
    Gzip,
    /// `deflate`: zlib-wrapped, or raw deflate as some clients send it.
    Deflate,
    /// Brotli.
    Brotli,
    /// Zstandard, one or more frames.
    Zstd,
}

impl ContentEncoding {
    /// Reads a `Content-Encoding` header value (case-insensitive). Unknown
    /// encodings and stacked ones (`gzip, br`) are errors naming them.
    pub fn parse(value: &str) -> Result<ContentEncoding, ParseError> {
        let v = value.trim().to_ascii_lowercase();
        Ok(match v.as_str() {
            "" | "identity" | "utf-8" | "utf8" => ContentEncoding::Identity,
            "gzip" | "x-gzip" => ContentEncoding::Gzip,
            "deflate" => ContentEncoding::Deflate,
            "br" => ContentEncoding::Brotli,
            "zstd" => ContentEncoding::Zstd,
            _ => {
                return Err(ParseError::malformed(
                    FORMAT,
                    format!(
                        "expected gzip, deflate, br, zstd or identity, found {}",
                        crate::util::preview_str(value)
                    ),
                ));
            }
        })
    }

    /// The header spelling, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Deflate => "deflate",
            ContentEncoding::Brotli => "br",
            ContentEncoding::Zstd => "zstd",
        }
    }
}

/// Largest zstd window accepted: 2^24 = 16 MiB, what the zstd format
/// recommends decoders support at least (RFC 8878 §3.1.1.1.2). A frame that
/// asks for more would make the decoder allocate it up front.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Decodes `input` with `encoding`, failing with [`ParseError::TooLarge`]
/// once the output would pass `limit` bytes.
///
/// The deflate family reads the body in place (`bufread` decoders over the
/// slice) rather than through a buffer of the decoder's own.
pub fn decode(
    encoding: ContentEncoding,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, ParseError> {
    let name = encoding.as_str();
    match encoding {
        ContentEncoding::Identity => {
            if input.len() > limit {
                return Err(ParseError::TooLarge {
                    format: FORMAT,
                    size: input.len(),
                    limit,
                });
            }
            Ok(input.to_vec())
        }
        ContentEncoding::Gzip => match gunzip_whole(input, limit) {
            Some(out) => Ok(out),
            None => bounded(
                flate2::bufread::MultiGzDecoder::new(input),
                name,
                input,
                limit,
            ),
        },
        ContentEncoding::Deflate if looks_like_zlib(input) => {
            bounded(flate2::bufread::ZlibDecoder::new(input), name, input, limit)
        }
        ContentEncoding::Deflate => bounded(
            flate2::bufread::DeflateDecoder::new(input),
            name,
            input,
            limit,
        ),
        ContentEncoding::Brotli => bounded(
            brotli_decompressor::Decompressor::new(input, 16 * 1024),
            name,
            input,
            limit,
        ),
        ContentEncoding::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| ParseError::malformed(FORMAT, format!("zstd: {e}")))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| ParseError::malformed(FORMAT, format!("zstd: {e}")))?;
            bounded(d, name, input, limit)
        }
    }
}

/// Largest body [`gunzip_whole`] inflates: past it the streaming decoder,
/// which holds no more than the output, is worth what it costs.
const WHOLE_GZIP_MAX: usize = 1 << 20;

/// A gzip body inflated in one call, into a buffer of the size its trailer
/// names (ISIZE), when that is at most `limit` and [`WHOLE_GZIP_MAX`]. Most
/// SDK bodies are one small member, and one call costs about two thirds of
/// streaming them. `None` whenever anything is off (a trailer that lies,
/// several members, corrupt data): the streaming decoder then decides and
/// names the error.
fn gunzip_whole(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    let trailer = input.get(input.len().checked_sub(8)?..)?;
    let (crc, size) = trailer.split_at(4);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    let size = usize::try_from(u32::from_le_bytes(size.try_into().ok()?)).ok()?;
    // Deflate expands at most 1032 to 1: a trailer claiming more of a
    // single member lies, and must not size a buffer.
    if size
        > limit
            .min(WHOLE_GZIP_MAX)
            .min(input.len().saturating_mul(1032))
    {
        return None;
    }
    let mut out = vec![0u8; size];
    let n = libdeflater::Decompressor::new()
        .gzip_decompress(input, &mut out)
        .ok()?;
    // libdeflate reads the first member only and checks it against its own
    // trailer. A body of several members ends with the trailer of the last:
    // output matching it in size and CRC is the whole body.
    let mut check = flate2::Crc::new();
    check.update(&out);
    (n == size && check.sum() == crc).then_some(out)
}

/// A zlib stream starts with a CMF byte for deflate (method 8) and a
/// check making `CMF*256 + FLG` a multiple of 31 (RFC 1950 §2.2).
fn looks_like_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Reads `decoder` into a vector of at most `limit` bytes.
fn bounded(
    decoder: impl Read,
    name: &str,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, ParseError> {
    // Start near the likely size, not the limit: most bodies are small.
    let guess = input.len().saturating_mul(4).min(limit).min(1 << 20);
    let mut out = Vec::with_capacity(guess);
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| ParseError::malformed(FORMAT, format!("{name}: {e}")))?;
    if out.len() > limit {
        return Err(ParseError::TooLarge {
            format: FORMAT,
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// The body of a `/store/` request: JSON as sent, or (old SDKs) the base64
/// of a zlib-compressed or plain JSON event. The result is at most `limit`
/// bytes.
pub fn decode_store_body(body: &[u8], limit: usize) -> Result<Vec<u8>, ParseError> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let trimmed = &body[start..];
    if trimmed.first() == Some(&b'{') || trimmed.is_empty() {
        return decode(ContentEncoding::Identity, body, limit);
    }
    // Base64 bodies may be wrapped over lines.
    let compact: Vec<u8> = trimmed
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .map_err(|e| {
            ParseError::malformed(
                "sentry_store",
                format!(
                    "expected a JSON object or base64, found {}: {e}",
                    crate::util::preview(trimmed)
                ),
            )
        })?;
    if looks_like_zlib(&raw) {
        decode(ContentEncoding::Deflate, &raw, limit)
    } else {
        decode(ContentEncoding::Identity, &raw, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EVENT: &[u8] = br#"{"message":"hello","level":"error"}"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        gzip_at(data, flate2::Compression::fast())
    }

    fn gzip_at(data: &[u8], level: flate2::Compression) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
            let _ = w.write_all(data);
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).unwrap_or_default()
    }

    #[test]
    fn header_values_are_read_case_insensitively() {
        assert_eq!(ContentEncoding::parse("GZip"), Ok(ContentEncoding::Gzip));
        assert_eq!(ContentEncoding::parse(" br "), Ok(ContentEncoding::Brotli));
        assert_eq!(ContentEncoding::parse(""), Ok(ContentEncoding::Identity));
        assert_eq!(
            ContentEncoding::parse("UTF-8"),
            Ok(ContentEncoding::Identity)
        );
        assert!(ContentEncoding::parse("compress").is_err());
        assert!(ContentEncoding::parse("gzip, br").is_err());
    }

    #[test]
    fn every_encoding_round_trips() {
        let cases = [
            (ContentEncoding::Identity, EVENT.to_vec()),
            (ContentEncoding::Gzip, gzip(EVENT)),
            (ContentEncoding::Deflate, zlib(EVENT)),
            (ContentEncoding::Deflate, raw_deflate(EVENT)),
            (ContentEncoding::Brotli, brotli(EVENT)),
            (ContentEncoding::Zstd, zstd(EVENT)),
        ];
        for (enc, body) in cases {
            assert_eq!(decode(enc, &body, 1024).as_deref(), Ok(EVENT), "{enc:?}");
        }
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames_are_all_read() {
        // Members of one size: the first alone matches the last's trailer
        // in size, not in CRC, so it is not taken for the whole body.
        let mut g = gzip(b"ab");
        g.extend(gzip(b"cd"));
        assert_eq!(
            decode(ContentEncoding::Gzip, &g, 10).as_deref(),
            Ok(&b"abcd"[..])
        );
        let mut z = zstd(b"ab");
        z.extend(zstd(b"cd"));
        assert_eq!(
            decode(ContentEncoding::Zstd, &z, 10).as_deref(),
            Ok(&b"abcd"[..])
        );
    }

    #[test]
    fn gzip_bodies_whose_trailer_lies_are_corrupt_and_big_ones_still_read() {
        // A trailer naming another size or CRC is corrupt data, not a cut body.
        for at in [1, 5] {
            let mut lying = gzip(&[b'x'; 1000]);
            let n = lying.len();
            lying[n - at] ^= 0x01;
            let e = decode(ContentEncoding::Gzip, &lying, 1 << 20);
            assert!(
                matches!(&e, Err(ParseError::Malformed { reason, .. }) if reason.starts_with("gzip")),
                "{e:?}"
            );
        }
        // Past the one-call size, the stream is read as before.
        let big = vec![b'y'; WHOLE_GZIP_MAX + 1];
        assert_eq!(
            decode(ContentEncoding::Gzip, &gzip(&big), 2 << 20).map(|v| v.len()),
            Ok(big.len())
        );
    }

    #[test]
    fn corrupt_input_is_an_error_naming_the_encoding() {
        for enc in [
            ContentEncoding::Gzip,
            ContentEncoding::Deflate,
            ContentEncoding::Brotli,
            ContentEncoding::Zstd,
        ] {
            let e = decode(enc, b"\x1f\x8b\x08garbage garbage garbage", 1024);
            assert!(
                matches!(&e, Err(ParseError::Malformed { reason, .. }) if reason.starts_with(enc.as_str())),
                "{enc:?}: {e:?}"
            );
        }
        let mut truncated = gzip(&[b'x'; 1000]);
        truncated.truncate(truncated.len() / 2);
        assert!(decode(ContentEncoding::Gzip, &truncated, 1 << 20).is_err());
    }

    #[test]
    fn output_exactly_at_the_limit_passes_and_one_more_byte_fails() {
        let data = vec![b'a'; 1000];
        assert_eq!(
            decode(ContentEncoding::Gzip, &gzip(&data), 1000).map(|v| v.len()),
            Ok(1000)
        );
        assert!(matches!(
            decode(ContentEncoding::Gzip, &gzip(&data), 999),
            Err(ParseError::TooLarge { limit: 999, .. })
        ));
        assert!(matches!(
            decode(ContentEncoding::Identity, &data, 999),
            Err(ParseError::TooLarge { size: 1000, .. })
        ));
    }

    /// `reps` copies of one compressed block of `block` zero bytes: a bomb
    /// of `reps * block` bytes nominal, built without compressing all of it.
    fn repeated(one: Vec<u8>, reps: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(one.len() * reps);
        for _ in 0..reps {
            out.extend_from_slice(&one);
        }
        out
    }

    const GIB: usize = 1 << 30;

    /// Decoding `bomb` with a 1 MiB limit stops one byte past it: at most
    /// limit+1 bytes were ever held, whatever the nominal size.
    fn stops_at_the_limit(encoding: ContentEncoding, bomb: &[u8]) {
        let limit = 1 << 20;
        assert_eq!(
            decode(encoding, bomb, limit),
            Err(ParseError::TooLarge {
                format: FORMAT,
                size: limit + 1,
                limit
            })
        );
    }

    #[test]
    fn a_10_gib_gzip_bomb_stops_at_the_limit() {
        // 100 MiB of zeros per member, 103 members: over 10 GiB nominal, ~10 MiB on the wire.
        let bomb = repeated(
            gzip_at(&vec![0u8; 100 << 20], flate2::Compression::best()),
            103,
        );
        assert!(bomb.len() < 20 << 20, "{} bytes", bomb.len());
        const { assert!(103 * (100usize << 20) > 10 * GIB) };
        stops_at_the_limit(ContentEncoding::Gzip, &bomb);
    }

    #[test]
    fn a_10_gib_zstd_bomb_stops_at_the_limit() {
        stops_at_the_limit(
            ContentEncoding::Zstd,
            &repeated(zstd(&vec![0u8; 100 << 20]), 103),
        );
    }

    #[test]
    fn a_brotli_bomb_stops_at_the_limit() {
        // Brotli has no concatenation: the bomb is one stream, 1 GiB nominal.
        stops_at_the_limit(ContentEncoding::Brotli, &brotli(&vec![0u8; GIB]));
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        // Frame header: magic, descriptor 0x00 (window descriptor follows,
        // no checksum, no dictionary), window descriptor 0xF8 = 2^(10+31) bytes.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0x01, 0x00, 0x00];
        assert!(decode(ContentEncoding::Zstd, &frame, 1 << 20).is_err());
    }

    #[test]
    fn store_bodies_may_be_base64_of_zlib() {
        use base64::engine::general_purpose::STANDARD;
        assert_eq!(decode_store_body(EVENT, 1024).as_deref(), Ok(EVENT));
        let old = STANDARD.encode(zlib(EVENT));
        assert_eq!(
            decode_store_body(old.as_bytes(), 1024).as_deref(),
            Ok(EVENT)
        );
        let wrapped: String = old
            .chars()
            .enumerate()
            .flat_map(|(i, c)| if i % 10 == 9 { vec![c, '\n'] } else { vec![c] })
            .collect();
        assert_eq!(
            decode_store_body(wrapped.as_bytes(), 1024).as_deref(),
            Ok(EVENT)
        );
        let plain = STANDARD.encode(EVENT);
        assert_eq!(
            decode_store_body(plain.as_bytes(), 1024).as_deref(),
            Ok(EVENT)
        );
        assert!(decode_store_body(b"not base64 at all!", 1024).is_err());
        let bomb = STANDARD.encode(zlib(&vec![0u8; 10 << 20]));
        assert!(matches!(
            decode_store_body(bomb.as_bytes(), 1 << 20),
            Err(ParseError::TooLarge { .. })
        ));
    }
}
