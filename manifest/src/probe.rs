//! Media probes over segment bytes, for `edge ingest`: the timescale and tracks of an
//! fMP4 init segment, the decode time and duration of each track in an fMP4 media
//! segment, and the presentation span of an MPEG-TS segment.
//!
//! They read untrusted files: every length is checked, nothing is trusted to fit,
//! and a malformed input is an error, never a panic (fuzzed in `fuzz/`).

/// Why a segment could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// A box or packet structure that does not add up.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A required box or stream is absent.
    #[error("no {0}")]
    Missing(&'static str),
}

/// What a track of an init segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// `tkhd` track id.
    pub id: u32,
    /// `mdhd` timescale.
    pub timescale: u32,
    /// `hdlr` handler: `vide`, `soun`, ...
    pub handler: [u8; 4],
    /// `trex` default sample duration (0 if none).
    pub default_duration: u32,
}

/// The timing of one track in a media segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Track id.
    pub track: u32,
    /// `tfdt` base media decode time.
    pub decode_time: u64,
    /// Sum of the sample durations, in the track's timescale.
    pub duration: u64,
    /// The first sample's composition offset (presentation = decode + this).
    pub first_composition_offset: i64,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProbeError> {
        let end = self.at.checked_add(n).ok_or(ProbeError::Malformed(what))?;
        let s = self
            .b
            .get(self.at..end)
            .ok_or(ProbeError::Malformed(what))?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ProbeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ProbeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ProbeError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
}

/// The boxes directly inside `b`: (type, payload).
fn boxes(b: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), ProbeError>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= b.len() {
            return None;
        }
        let r = (|| {
            let head = b
                .get(at..at + 8)
                .ok_or(ProbeError::Malformed("box header"))?;
            let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
            let kind = [head[4], head[5], head[6], head[7]];
            let (size, header) = match size32 {
                0 => ((b.len() - at) as u64, 8u64),
                1 => {
                    let ext = b
                        .get(at + 8..at + 16)
                        .ok_or(ProbeError::Malformed("box size"))?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(ext);
                    (u64::from_be_bytes(a), 16)
                }
                s => (s, 8),
            };
            if size < header || size > (b.len() - at) as u64 {
                return Err(ProbeError::Malformed("box size"));
            }
            let payload = &b[at + header as usize..at + size as usize];
            at += size as usize;
            Ok((kind, payload))
        })();
        if r.is_err() {
            at = b.len();
        }
        Some(r)
    })
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, ProbeError> {
    for x in boxes(b) {
        let (k, p) = x?;
        if &k == kind {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The tracks of an fMP4 init segment (`ftyp` + `moov`).
pub fn init_tracks(init: &[u8]) -> Result<Vec<Track>, ProbeError> {
    let moov = child(init, b"moov")?.ok_or(ProbeError::Missing("moov box"))?;
    let mut tracks = Vec::new();
    for x in boxes(moov) {
        let (k, trak) = x?;
        if &k != b"trak" {
            continue;
        }
        let tkhd = child(trak, b"tkhd")?.ok_or(ProbeError::Missing("tkhd box"))?;
        let mut r = Reader::new(tkhd);
        let version = r.u8("tkhd")?;
        r.take(3, "tkhd")?;
        r.take(if version == 1 { 16 } else { 8 }, "tkhd")?;
        let id = r.u32("tkhd")?;
        let mdia = child(trak, b"mdia")?.ok_or(ProbeError::Missing("mdia box"))?;
        let mdhd = child(mdia, b"mdhd")?.ok_or(ProbeError::Missing("mdhd box"))?;
        let mut r = Reader::new(mdhd);
        let version = r.u8("mdhd")?;
        r.take(3, "mdhd")?;
        r.take(if version == 1 { 16 } else { 8 }, "mdhd")?;
        let timescale = r.u32("mdhd")?;
        if timescale == 0 {
            return Err(ProbeError::Malformed("mdhd timescale"));
        }
        let hdlr = child(mdia, b"hdlr")?.ok_or(ProbeError::Missing("hdlr box"))?;
        let mut r = Reader::new(hdlr);
        r.take(8, "hdlr")?;
        let h = r.take(4, "hdlr")?;
        tracks.push(Track {
            id,
            timescale,
            handler: [h[0], h[1], h[2], h[3]],
            default_duration: 0,
        });
    }
    if let Some(mvex) = child(moov, b"mvex")? {
        for x in boxes(mvex) {
            let (k, trex) = x?;
            if &k != b"trex" {
                continue;
            }
            let mut r = Reader::new(trex);
            r.take(4, "trex")?;
            let id = r.u32("trex")?;
            r.take(4, "trex")?;
            let d = r.u32("trex")?;
            if let Some(t) = tracks.iter_mut().find(|t| t.id == id) {
                t.default_duration = d;
            }
        }
    }
    if tracks.is_empty() {
        return Err(ProbeError::Missing("track"));
    }
    Ok(tracks)
}

/// The timing of each track fragment in an fMP4 media segment (all its `moof`s
/// summed per track). `tracks` come from the init segment (for default durations).
pub fn fragments(segment: &[u8], tracks: &[Track]) -> Result<Vec<Fragment>, ProbeError> {
    let mut out: Vec<Fragment> = Vec::new();
    for x in boxes(segment) {
        let (k, moof) = x?;
        if &k != b"moof" {
            continue;
        }
        for y in boxes(moof) {
            let (k, traf) = y?;
            if &k != b"traf" {
                continue;
            }
            let f = traf_timing(traf, tracks)?;
            match out.iter_mut().find(|o| o.track == f.track) {
                Some(o) => o.duration = o.duration.saturating_add(f.duration),
                None => out.push(f),
            }
        }
    }
    if out.is_empty() {
        return Err(ProbeError::Missing("moof/traf"));
    }
    Ok(out)
}

fn traf_timing(traf: &[u8], tracks: &[Track]) -> Result<Fragment, ProbeError> {
    let tfhd = child(traf, b"tfhd")?.ok_or(ProbeError::Missing("tfhd box"))?;
    let mut r = Reader::new(tfhd);
    let flags = r.u32("tfhd")? & 0x00ff_ffff;
    let track = r.u32("tfhd")?;
    if flags & 0x01 != 0 {
        r.take(8, "tfhd")?;
    }
    if flags & 0x02 != 0 {
        r.take(4, "tfhd")?;
    }
    let mut default_duration = tracks
        .iter()
        .find(|t| t.id == track)
        .map_or(0, |t| t.default_duration);
    if flags & 0x08 != 0 {
        default_duration = r.u32("tfhd")?;
    }
    let decode_time = match child(traf, b"tfdt")? {
        Some(tfdt) => {
            let mut r = Reader::new(tfdt);
            let version = r.u8("tfdt")?;
            r.take(3, "tfdt")?;
            if version == 1 {
                r.u64("tfdt")?
            } else {
                u64::from(r.u32("tfdt")?)
            }
        }
        None => return Err(ProbeError::Missing("tfdt box")),
    };
    let mut duration = 0u64;
    let mut first_composition_offset = None;
    for x in boxes(traf) {
        let (k, trun) = x?;
        if &k != b"trun" {
            continue;
        }
        let mut r = Reader::new(trun);
        let vf = r.u32("trun")?;
        let (version, flags) = (vf >> 24, vf & 0x00ff_ffff);
        let count = r.u32("trun")?;
        if flags & 0x001 != 0 {
            r.take(4, "trun")?;
        }
        if flags & 0x004 != 0 {
            r.take(4, "trun")?;
        }
        let per_sample = [0x100, 0x200, 0x400, 0x800]
            .iter()
            .filter(|&&f| flags & f != 0)
            .count();
        if (count as usize).saturating_mul(per_sample * 4) > trun.len() {
            return Err(ProbeError::Malformed("trun sample count"));
        }
        if per_sample == 0 {
            // Every sample takes the default duration: no per-sample loop, so a huge
            // count in a tiny box costs nothing.
            duration = duration.saturating_add(u64::from(count) * u64::from(default_duration));
            continue;
        }
        for _ in 0..count {
            let d = if flags & 0x100 != 0 {
                r.u32("trun")?
            } else {
                default_duration
            };
            duration = duration.saturating_add(u64::from(d));
            if flags & 0x200 != 0 {
                r.take(4, "trun")?;
            }
            if flags & 0x400 != 0 {
                r.take(4, "trun")?;
            }
            if flags & 0x800 != 0 {
                let raw = r.u32("trun")?;
                let off = if version == 0 {
                    i64::from(raw)
                } else {
                    i64::from(raw as i32)
                };
                first_composition_offset.get_or_insert(off);
            }
        }
    }
    Ok(Fragment {
        track,
        decode_time,
        duration,
        first_composition_offset: first_composition_offset.unwrap_or(0),
    })
}

/// The presentation span of an MPEG-TS segment, in 90 kHz ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsSpan {
    /// The earliest PTS of the measured stream.
    pub first_pts: u64,
    /// From the earliest PTS to the end of the last frame.
    pub duration: u64,
}

/// Measures an MPEG-TS segment by the PTS of its video stream (else its first audio
/// stream): the span from the earliest to the latest PTS plus one frame interval
/// (the smallest step between consecutive PTS values).
pub fn ts_span(ts: &[u8]) -> Result<TsSpan, ProbeError> {
    if ts.len() < 188 || ts.len() % 188 != 0 {
        return Err(ProbeError::Malformed("transport stream length"));
    }
    // (pid, is_video, pts values)
    let mut streams: Vec<(u16, bool, Vec<u64>)> = Vec::new();
    for p in ts.chunks_exact(188) {
        if p[0] != 0x47 {
            return Err(ProbeError::Malformed("transport stream sync byte"));
        }
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let afc = (p[3] >> 4) & 0x3;
        if !pusi || afc & 0x1 == 0 {
            continue;
        }
        let mut at = 4usize;
        if afc & 0x2 != 0 {
            at += 1 + usize::from(p[4]);
        }
        let Some(pes) = p.get(at..) else {
            return Err(ProbeError::Malformed("adaptation field"));
        };
        if pes.len() < 14 || pes[..3] != [0, 0, 1] {
            continue;
        }
        let sid = pes[3];
        let is_video = (0xe0..=0xef).contains(&sid);
        let is_audio = (0xc0..=0xdf).contains(&sid);
        if !is_video && !is_audio || pes[7] & 0x80 == 0 {
            continue;
        }
        let b = &pes[9..14];
        let pts = (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1);
        match streams.iter_mut().find(|s| s.0 == pid) {
            Some(s) => s.2.push(pts),
            None => streams.push((pid, is_video, vec![pts])),
        }
    }
    let chosen = streams
        .iter_mut()
        .find(|s| s.1)
        .map(|s| std::mem::take(&mut s.2))
        .or_else(|| streams.first_mut().map(|s| std::mem::take(&mut s.2)))
        .ok_or(ProbeError::Missing("PES stream with PTS"))?;
    let mut pts = chosen;
    pts.sort_unstable();
    pts.dedup();
    let step = pts.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(0);
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    Ok(TsSpan {
        first_pts: first,
        duration: last - first + step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a box.
    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn init(timescale: u32) -> Vec<u8> {
        let mut tkhd = vec![0u8; 4 + 8];
        tkhd.extend_from_slice(&1u32.to_be_bytes());
        tkhd.extend_from_slice(&[0; 60]);
        let mut mdhd = vec![0u8; 4 + 8];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.extend_from_slice(&[0; 8]);
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0; 13]);
        let mdia = [bx(b"mdhd", &mdhd), bx(b"hdlr", &hdlr)].concat();
        let trak = [bx(b"tkhd", &tkhd), bx(b"mdia", &mdia)].concat();
        let mut trex = vec![0u8; 4];
        trex.extend_from_slice(&1u32.to_be_bytes());
        trex.extend_from_slice(&1u32.to_be_bytes());
        trex.extend_from_slice(&512u32.to_be_bytes());
        trex.extend_from_slice(&[0; 8]);
        let moov = [bx(b"trak", &trak), bx(b"mvex", &bx(b"trex", &trex))].concat();
        [bx(b"ftyp", b"isom\0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    fn segment(decode: u64, samples: u32) -> Vec<u8> {
        let mut tfhd = 0u32.to_be_bytes().to_vec();
        tfhd.extend_from_slice(&1u32.to_be_bytes());
        let mut tfdt = vec![1, 0, 0, 0];
        tfdt.extend_from_slice(&decode.to_be_bytes());
        // flags: data-offset, composition offsets; durations from trex (512)
        let mut trun = 0x0000_0801u32.to_be_bytes().to_vec();
        trun.extend_from_slice(&samples.to_be_bytes());
        trun.extend_from_slice(&0u32.to_be_bytes());
        for i in 0..samples {
            trun.extend_from_slice(&(1024 * (i % 2)).to_be_bytes());
        }
        let traf = [bx(b"tfhd", &tfhd), bx(b"tfdt", &tfdt), bx(b"trun", &trun)].concat();
        [bx(b"moof", &bx(b"traf", &traf)), bx(b"mdat", &[0; 16])].concat()
    }

    #[test]
    fn measures_fmp4() {
        let tracks = init_tracks(&init(12800)).unwrap();
        assert_eq!(
            tracks,
            vec![Track {
                id: 1,
                timescale: 12800,
                handler: *b"vide",
                default_duration: 512
            }]
        );
        let f = fragments(&segment(25600, 50), &tracks).unwrap();
        assert_eq!(
            f,
            vec![Fragment {
                track: 1,
                decode_time: 25600,
                duration: 25600,
                first_composition_offset: 0
            }]
        );
    }

    #[test]
    fn refuses_broken_boxes() {
        let mut s = segment(0, 50);
        s[3] = 0xff; // moof size beyond the buffer
        assert!(fragments(&s, &[]).is_err());
        assert!(init_tracks(b"garbage").is_err());
        let mut s = segment(0, 50);
        // sample count far beyond the box
        let at = s.windows(4).position(|w| w == b"trun").unwrap() + 8;
        s[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(fragments(&s, &[]).is_err());
    }

    fn ts_packet(pid: u16, sid: u8, pts: u64) -> Vec<u8> {
        let mut p = vec![0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10];
        p.extend_from_slice(&[0, 0, 1, sid, 0, 0, 0x80, 0x80, 5]);
        p.push(0x21 | ((pts >> 29) & 0x0e) as u8);
        p.push((pts >> 22) as u8);
        p.push(0x01 | ((pts >> 14) & 0xfe) as u8);
        p.push((pts >> 7) as u8);
        p.push(0x01 | ((pts << 1) & 0xfe) as u8);
        p.resize(188, 0xff);
        p
    }

    #[test]
    fn measures_ts_by_video_pts() {
        let mut ts = Vec::new();
        for i in [0u64, 2, 1, 4, 3] {
            ts.extend(ts_packet(256, 0xe0, 126_000 + i * 3600));
            ts.extend(ts_packet(257, 0xc0, 120_000 + i * 1920));
        }
        assert_eq!(
            ts_span(&ts).unwrap(),
            TsSpan {
                first_pts: 126_000,
                duration: 5 * 3600
            }
        );
        assert!(ts_span(&ts[..100]).is_err());
        let mut bad = ts.clone();
        bad[188] = 0;
        assert!(ts_span(&bad).is_err());
    }

    #[test]
    fn a_huge_sample_count_without_per_sample_fields_is_instant() {
        let mut tfhd = 0x08u32.to_be_bytes().to_vec(); // default-sample-duration present
        tfhd.extend_from_slice(&1u32.to_be_bytes());
        tfhd.extend_from_slice(&512u32.to_be_bytes());
        let tfdt = vec![0u8; 8];
        let mut trun = 0u32.to_be_bytes().to_vec();
        trun.extend_from_slice(&u32::MAX.to_be_bytes());
        let traf = [bx(b"tfhd", &tfhd), bx(b"tfdt", &tfdt), bx(b"trun", &trun)].concat();
        let seg = bx(b"moof", &bx(b"traf", &traf));
        let t0 = std::time::Instant::now();
        let f = fragments(&seg, &[]).unwrap();
        assert_eq!(f[0].duration, u64::from(u32::MAX) * 512);
        assert!(t0.elapsed() < std::time::Duration::from_millis(50));
    }

    proptest::proptest! {
        #[test]
        fn probes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = init_tracks(&b);
            let _ = fragments(&b, &[]);
            let _ = ts_span(&b);
        }
    }
}
