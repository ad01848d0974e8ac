//! Several LoRA adapters as one: `--lora a.gguf:0.7 --lora b.gguf:0.3`.
//!
//! llama-cpp-2's safe API gives a context exactly one adapter, so kefu stacks adapters by
//! merging them into one GGUF adapter before loading it. A LoRA adapter adds
//! `s · B·A` to a weight (A: rank × in, B: out × rank, `s` the user's scale times
//! `alpha / rank` when the adapter sets alpha). The sum of several is again a product of
//! two factors whose rank is the sum of the ranks:
//!
//! ```text
//! s₁·B₁A₁ + s₂·B₂A₂ = [s₁B₁ | s₂B₂] · [A₁ ; A₂]
//! ```
//!
//! so the merged adapter stacks the A factors, places the B factors side by side with
//! each adapter's scale folded in, and sets alpha to 0 (llama.cpp then applies the load
//! scale, 1, as it is). The result is exact, not an approximation, and as large as the
//! inputs together. Factors are read as F32, F16 or BF16 and written as F32; quantised
//! factors and activated LoRA (aLoRA) adapters are refused with a message.
//!
//! Tensor layout follows llama.cpp (`llama-adapter.cpp`): for a weight of ggml shape
//! `[in, out]`, `lora_a` is `[in, rank]` and `lora_b` is `[rank, out]`; the token
//! embedding's pair is flipped (`lora_a` is `[rank, n_vocab]`). ggml shapes list the
//! contiguous dimension first.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Why adapters could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A file is not a GGUF LoRA adapter kefu can merge.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Merges `adapters` (paths and scales, as given to `--lora`) into one adapter written to
/// `out`, to be loaded with scale 1.
pub fn merge(adapters: &[(PathBuf, f32)], out: &Path) -> Result<(), LoraError> {
    let mut files = Vec::new();
    for (path, scale) in adapters {
        let file = Gguf::read(path)?;
        file.check_adapter(path)?;
        files.push((path, *scale, file));
    }
    let Some((first_path, _, first)) = files.first() else {
        return Err(LoraError::Invalid {
            path: out.to_path_buf(),
            message: "no adapter to merge".into(),
        });
    };
    let arch = first.string("general.architecture");
    for (path, _, file) in &files {
        if file.string("general.architecture") != arch {
            return Err(invalid(
                path,
                format!(
                    "adapter for {:?}, but {} is for {:?}",
                    file.string("general.architecture"),
                    first_path.display(),
                    arch
                ),
            ));
        }
    }
    // Every adapted weight, with the factors each adapter has for it.
    let mut pairs: BTreeMap<String, Vec<(Factor, Factor, f32)>> = BTreeMap::new();
    for (path, scale, file) in &files {
        let alpha = file.f32("adapter.lora.alpha").unwrap_or(0.0);
        for name in file.tensors.keys() {
            let Some(base) = name.strip_suffix(".lora_a") else {
                continue;
            };
            let a = file.factor(path, name)?;
            let b = file.factor(path, &format!("{base}.lora_b"))?;
            let rank = b.shape[0];
            let s = if alpha != 0.0 {
                scale * alpha / rank as f32
            } else {
                *scale
            };
            pairs.entry(base.to_string()).or_default().push((a, b, s));
        }
    }
    let mut tensors = Vec::new();
    for (base, parts) in pairs {
        let flipped = base.starts_with("token_embd");
        let (a, b) = concatenate(&base, &parts, flipped).map_err(|m| invalid(out, m))?;
        tensors.push((format!("{base}.lora_a"), a));
        tensors.push((format!("{base}.lora_b"), b));
    }
    let mut metadata = first.metadata.clone();
    metadata.retain(|(k, _)| k != "adapter.lora.alpha" && k != "general.alignment");
    metadata.push(("adapter.lora.alpha".into(), Value::F32(0.0)));
    write(out, &metadata, &tensors).map_err(|source| LoraError::Io {
        path: out.to_path_buf(),
        source,
    })
}

/// The ggml shape (contiguous dimension first) of tensor `name` in a GGUF file, a model
/// or an adapter: what an adapter's factors must fit. Only the file's header is read.
pub fn tensor_shape(path: &Path, name: &str) -> Result<Vec<u64>, LoraError> {
    let file = Gguf::read_header(path)?;
    let info = file
        .tensors
        .get(name)
        .ok_or_else(|| invalid(path, format!("no tensor {name}")))?;
    Ok(info.dims.clone())
}

/// Writes a LoRA adapter GGUF for `architecture` (alpha 0: the load scale applies as it
/// is) from F32 factors: `(name, ggml shape, values)`, names ending in `.lora_a` and
/// `.lora_b` (module docs).
pub fn write_adapter(path: &Path, architecture: &str, factors: &[(String, [usize; 2], Vec<f32>)]) -> io::Result<()> {
    let metadata = vec![
        ("general.type".to_string(), Value::String("adapter".into())),
        ("general.architecture".to_string(), Value::String(architecture.into())),
        ("adapter.type".to_string(), Value::String("lora".into())),
        ("adapter.lora.alpha".to_string(), Value::F32(0.0)),
    ];
    for (name, shape, data) in factors {
        if shape[0] * shape[1] != data.len() {
            return Err(bad(&format!("{name}: {} values for shape {shape:?}", data.len())));
        }
    }
    let tensors: Vec<(String, Factor)> = factors
        .iter()
        .map(|(name, shape, data)| {
            (
                name.clone(),
                Factor {
                    shape: *shape,
                    data: data.clone(),
                },
            )
        })
        .collect();
    write(path, &metadata, &tensors)
}

/// A factor's values (F32) and ggml shape (contiguous dimension first).
#[derive(Clone, Debug, PartialEq)]
struct Factor {
    shape: [usize; 2],
    data: Vec<f32>,
}

/// The merged `(lora_a, lora_b)` of one weight. The rank is `b.shape[0]`; it is A's
/// second dimension, or its first for the flipped token embedding.
fn concatenate(base: &str, parts: &[(Factor, Factor, f32)], flipped: bool) -> Result<(Factor, Factor), String> {
    let (a0, b0, _) = &parts[0];
    let rank: usize = parts.iter().map(|(_, b, _)| b.shape[0]).sum();
    for (a, b, _) in parts {
        let a_rank = if flipped { a.shape[0] } else { a.shape[1] };
        let same_weight = if flipped {
            a.shape[1] == a0.shape[1] && b.shape[1] == b0.shape[1]
        } else {
            a.shape[0] == a0.shape[0] && b.shape[1] == b0.shape[1]
        };
        if a_rank != b.shape[0] || !same_weight {
            return Err(format!(
                "{base}: the adapters' factors do not fit together (lora_a {:?}, lora_b {:?})",
                a.shape, b.shape
            ));
        }
    }
    // Side by side along the rank: each row of the result is the rows of the parts,
    // one after another.
    let side_by_side = |factors: &[(&Factor, f32)], rows: usize| {
        let mut data = Vec::with_capacity(rank * rows);
        for row in 0..rows {
            for (f, s) in factors {
                let width = f.shape[0];
                data.extend(f.data[row * width..(row + 1) * width].iter().map(|v| v * s));
            }
        }
        Factor {
            shape: [rank, rows],
            data,
        }
    };
    let b_parts: Vec<(&Factor, f32)> = parts.iter().map(|(_, b, s)| (b, *s)).collect();
    let b = side_by_side(&b_parts, b0.shape[1]);
    let a = if flipped {
        let a_parts: Vec<(&Factor, f32)> = parts.iter().map(|(a, _, _)| (a, 1.0)).collect();
        side_by_side(&a_parts, a0.shape[1])
    } else {
        // Stacked: the rank is A's outer dimension, so the parts' data follow each other.
        Factor {
            shape: [a0.shape[0], rank],
            data: parts.iter().flat_map(|(a, _, _)| a.data.iter().copied()).collect(),
        }
    };
    Ok((a, b))
}

fn invalid(path: &Path, message: impl Into<String>) -> LoraError {
    LoraError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A metadata value, kept as read so that it is written back unchanged.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(u32, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(..) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
}

/// ggml tensor types kefu reads.
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_BF16: u32 = 30;
const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A tensor's entry in a GGUF file.
#[derive(Clone, Debug)]
struct TensorInfo {
    dims: Vec<u64>,
    kind: u32,
    offset: u64,
}

/// A GGUF file: its metadata in order, its tensors by name, and the file's bytes (only
/// as far as the tensor table when read with [`Gguf::read_header`]).
struct Gguf {
    metadata: Vec<(String, Value)>,
    tensors: BTreeMap<String, TensorInfo>,
    bytes: Vec<u8>,
    /// Where the tensor data starts in `bytes` (tensor offsets count from here).
    data_start: usize,
}

impl Gguf {
    /// The whole file.
    fn read(path: &Path) -> Result<Gguf, LoraError> {
        let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Gguf::parse(bytes).map_err(|e| invalid(path, format!("not a readable GGUF file: {e}")))
    }

    /// The metadata and tensor table only: the file is read from the start until they are
    /// complete, so a model's weights (gigabytes) stay on disk.
    fn read_header(path: &Path) -> Result<Gguf, LoraError> {
        let io_error = |source| LoraError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_error)?;
        let mut bytes = Vec::new();
        let mut want = 1u64 << 20;
        loop {
            let got = (&mut file)
                .take(want - bytes.len() as u64)
                .read_to_end(&mut bytes)
                .map_err(io_error)?;
            match parse_header(&bytes) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && got > 0 => want *= 2,
                Err(e) => return Err(invalid(path, format!("not a readable GGUF file: {e}"))),
                Ok(header) => return Ok(Gguf::with(header, bytes)),
            }
        }
    }

    fn parse(bytes: Vec<u8>) -> io::Result<Gguf> {
        Ok(Gguf::with(parse_header(&bytes)?, bytes))
    }

    fn with((metadata, tensors, data_start): Header, bytes: Vec<u8>) -> Gguf {
        Gguf {
            metadata,
            tensors,
            bytes,
            data_start,
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    fn f32(&self, key: &str) -> Option<f32> {
        self.metadata.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
            Value::F32(x) => Some(*x),
            _ => None,
        })
    }

    /// Whether this is a plain LoRA adapter (what llama.cpp checks, and no aLoRA).
    fn check_adapter(&self, path: &Path) -> Result<(), LoraError> {
        if self.string("general.type") != Some("adapter") || self.string("adapter.type") != Some("lora") {
            return Err(invalid(
                path,
                "not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\")",
            ));
        }
        if self.metadata.iter().any(|(k, _)| k.starts_with("adapter.alora")) {
            return Err(invalid(
                path,
                "an activated LoRA (aLoRA) adapter: it cannot be merged; load it alone",
            ));
        }
        Ok(())
    }

    /// A 2-dimensional tensor as F32.
    fn factor(&self, path: &Path, name: &str) -> Result<Factor, LoraError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| invalid(path, format!("{name} is missing")))?;
        let shape = match info.dims.as_slice() {
            [a, b] => [*a as usize, *b as usize],
            [a] => [*a as usize, 1],
            _ => {
                return Err(invalid(
                    path,
                    format!("{name}: {} dimensions, 2 expected", info.dims.len()),
                ));
            }
        };
        let n = shape[0] * shape[1];
        let width = match info.kind {
            GGML_F32 => 4,
            GGML_F16 | GGML_BF16 => 2,
            other => {
                return Err(invalid(
                    path,
                    format!("{name}: tensor type {other} (quantised?); export the adapter as f16 or f32 to merge it"),
                ));
            }
        };
        let start = self.data_start + info.offset as usize;
        let raw = self
            .bytes
            .get(start..start + n * width)
            .ok_or_else(|| invalid(path, format!("{name}: data past the end of the file")))?;
        let data = match info.kind {
            GGML_F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GGML_F16 => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
        };
        Ok(Factor { shape, data })
    }
}

/// A GGUF file's metadata, tensor table, and where its tensor data starts.
type Header = (Vec<(String, Value)>, BTreeMap<String, TensorInfo>, usize);

/// Reads the metadata and tensor table at the start of `bytes`: `UnexpectedEof` when
/// `bytes` ends before they do.
fn parse_header(bytes: &[u8]) -> io::Result<Header> {
    let mut r = bytes;
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != GGUF_MAGIC {
        return Err(bad("no GGUF magic"));
    }
    let version = read_u32(&mut r)?;
    if version < 2 {
        return Err(bad(&format!("GGUF version {version} is too old")));
    }
    let n_tensors = read_u64(&mut r)?;
    let n_kv = read_u64(&mut r)?;
    let mut metadata = Vec::new();
    for _ in 0..n_kv {
        let key = read_string(&mut r)?;
        let kind = read_u32(&mut r)?;
        metadata.push((key, read_value(&mut r, kind)?));
    }
    let mut tensors = BTreeMap::new();
    for _ in 0..n_tensors {
        let name = read_string(&mut r)?;
        let n_dims = read_u32(&mut r)?;
        if n_dims > 4 {
            return Err(bad("a tensor with more than 4 dimensions"));
        }
        let dims = (0..n_dims).map(|_| read_u64(&mut r)).collect::<io::Result<Vec<_>>>()?;
        let kind = read_u32(&mut r)?;
        let offset = read_u64(&mut r)?;
        tensors.insert(name, TensorInfo { dims, kind, offset });
    }
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| match v {
            Value::U32(a) if *a > 0 => Some(u64::from(*a)),
            _ => None,
        })
        .unwrap_or(DEFAULT_ALIGNMENT);
    let header = (bytes.len() - r.len()) as u64;
    let start = usize::try_from(header.div_ceil(alignment) * alignment).map_err(|_| bad("too large"))?;
    Ok((metadata, tensors, start))
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((m << shift) & 0x3ff) << 13
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

fn bad(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn read_u32(r: &mut &[u8]) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut &[u8]) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut &[u8]) -> io::Result<String> {
    let len = usize::try_from(read_u64(r)?).map_err(|_| bad("string too long"))?;
    if len > r.len() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "string past the end"));
    }
    let (s, rest) = r.split_at(len);
    *r = rest;
    String::from_utf8(s.to_vec()).map_err(|_| bad("a string that is not UTF-8"))
}

fn read_value(r: &mut &[u8], kind: u32) -> io::Result<Value> {
    let mut b8 = [0u8; 8];
    Ok(match kind {
        0 | 1 | 7 => {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            match kind {
                0 => Value::U8(b[0]),
                1 => Value::I8(b[0] as i8),
                _ => Value::Bool(b[0] != 0),
            }
        }
        2 | 3 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            if kind == 2 {
                Value::U16(u16::from_le_bytes(b))
            } else {
                Value::I16(i16::from_le_bytes(b))
            }
        }
        4 => Value::U32(read_u32(r)?),
        5 => Value::I32(read_u32(r)? as i32),
        6 => Value::F32(f32::from_bits(read_u32(r)?)),
        8 => Value::String(read_string(r)?),
        9 => {
            let item = read_u32(r)?;
            let n = read_u64(r)?;
            if n > r.len() as u64 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "array past the end"));
            }
            Value::Array(item, (0..n).map(|_| read_value(r, item)).collect::<io::Result<_>>()?)
        }
        10..=12 => {
            r.read_exact(&mut b8)?;
            match kind {
                10 => Value::U64(u64::from_le_bytes(b8)),
                11 => Value::I64(i64::from_le_bytes(b8)),
                _ => Value::F64(f64::from_le_bytes(b8)),
            }
        }
        other => return Err(bad(&format!("unknown metadata type {other}"))),
    })
}

fn write_value(w: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => w.push(*v),
        Value::I8(v) => w.push(*v as u8),
        Value::Bool(v) => w.push(u8::from(*v)),
        Value::U16(v) => w.extend(v.to_le_bytes()),
        Value::I16(v) => w.extend(v.to_le_bytes()),
        Value::U32(v) => w.extend(v.to_le_bytes()),
        Value::I32(v) => w.extend(v.to_le_bytes()),
        Value::F32(v) => w.extend(v.to_le_bytes()),
        Value::String(s) => write_string(w, s),
        Value::Array(item, items) => {
            w.extend(item.to_le_bytes());
            w.extend((items.len() as u64).to_le_bytes());
            for v in items {
                write_value(w, v);
            }
        }
        Value::U64(v) => w.extend(v.to_le_bytes()),
        Value::I64(v) => w.extend(v.to_le_bytes()),
        Value::F64(v) => w.extend(v.to_le_bytes()),
    }
}

fn write_string(w: &mut Vec<u8>, s: &str) {
    w.extend((s.len() as u64).to_le_bytes());
    w.extend(s.as_bytes());
}

/// Writes a GGUF v3 file of F32 tensors.
fn write(path: &Path, metadata: &[(String, Value)], tensors: &[(String, Factor)]) -> io::Result<()> {
    let mut w = Vec::new();
    w.extend(GGUF_MAGIC);
    w.extend(3u32.to_le_bytes());
    w.extend((tensors.len() as u64).to_le_bytes());
    w.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut w, key);
        w.extend(value.type_id().to_le_bytes());
        write_value(&mut w, value);
    }
    let align = |n: u64| n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    let mut offset = 0u64;
    for (name, factor) in tensors {
        write_string(&mut w, name);
        w.extend(2u32.to_le_bytes());
        for d in factor.shape {
            w.extend((d as u64).to_le_bytes());
        }
        w.extend(GGML_F32.to_le_bytes());
        w.extend(offset.to_le_bytes());
        offset = align(offset + 4 * factor.data.len() as u64);
    }
    w.resize(align(w.len() as u64) as usize, 0);
    for (_, factor) in tensors {
        for v in &factor.data {
            w.extend(v.to_le_bytes());
        }
        w.resize(align(w.len() as u64) as usize, 0);
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(&w)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(shape: [usize; 2], first: f32) -> Factor {
        Factor {
            shape,
            data: (0..shape[0] * shape[1]).map(|i| first + i as f32).collect(),
        }
    }

    /// An adapter file with one adapted weight of ggml shape `[4, 3]` at `rank`.
    fn adapter(dir: &Path, name: &str, rank: usize, alpha: Option<f32>, first: f32) -> PathBuf {
        let mut metadata = vec![
            ("general.type".to_string(), Value::String("adapter".into())),
            ("general.architecture".to_string(), Value::String("llama".into())),
            ("adapter.type".to_string(), Value::String("lora".into())),
        ];
        if let Some(a) = alpha {
            metadata.push(("adapter.lora.alpha".into(), Value::F32(a)));
        }
        let tensors = vec![
            ("blk.0.attn_q.weight.lora_a".to_string(), factor([4, rank], first)),
            (
                "blk.0.attn_q.weight.lora_b".to_string(),
                factor([rank, 3], first + 100.0),
            ),
        ];
        let path = dir.join(name);
        write(&path, &metadata, &tensors).unwrap();
        path
    }

    /// The weight delta `Σ s·B·A` an adapter file stands for, as llama.cpp computes it,
    /// `[out][in]`.
    fn delta(path: &Path, scale: f32) -> Vec<Vec<f32>> {
        let g = Gguf::read(path).unwrap();
        let a = g.factor(path, "blk.0.attn_q.weight.lora_a").unwrap();
        let b = g.factor(path, "blk.0.attn_q.weight.lora_b").unwrap();
        let rank = b.shape[0];
        let alpha = g.f32("adapter.lora.alpha").unwrap_or(0.0);
        let s = if alpha != 0.0 {
            scale * alpha / rank as f32
        } else {
            scale
        };
        let (n_in, n_out) = (a.shape[0], b.shape[1]);
        (0..n_out)
            .map(|o| {
                (0..n_in)
                    .map(|i| {
                        (0..rank)
                            .map(|r| b.data[o * rank + r] * a.data[r * n_in + i])
                            .sum::<f32>()
                            * s
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_merged_adapter_adds_up_the_inputs_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let one = adapter(dir.path(), "one.gguf", 2, Some(4.0), 0.5);
        let two = adapter(dir.path(), "two.gguf", 3, None, -1.0);
        let merged = dir.path().join("merged.gguf");
        merge(&[(one.clone(), 0.7), (two.clone(), 0.3)], &merged).unwrap();
        let g = Gguf::read(&merged).unwrap();
        assert_eq!(g.f32("adapter.lora.alpha"), Some(0.0));
        assert_eq!(g.string("general.architecture"), Some("llama"));
        assert_eq!(g.tensors["blk.0.attn_q.weight.lora_a"].dims, vec![4, 5]);
        assert_eq!(g.tensors["blk.0.attn_q.weight.lora_b"].dims, vec![5, 3]);
        let (d1, d2, dm) = (delta(&one, 0.7), delta(&two, 0.3), delta(&merged, 1.0));
        for o in 0..3 {
            for i in 0..4 {
                let want = d1[o][i] + d2[o][i];
                assert!(
                    (dm[o][i] - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "[{o}][{i}] {} vs {want}",
                    dm[o][i]
                );
            }
        }
    }

    #[test]
    fn adapters_for_other_models_or_quantised_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let one = adapter(dir.path(), "one.gguf", 2, None, 0.0);
        let mut g = Gguf::read(&one).unwrap();
        g.metadata[1].1 = Value::String("gemma3".into());
        let tensors: Vec<(String, Factor)> = ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]
            .iter()
            .map(|n| (n.to_string(), g.factor(&one, n).unwrap()))
            .collect();
        let other = dir.path().join("other.gguf");
        write(&other, &g.metadata, &tensors).unwrap();
        let err = merge(&[(one.clone(), 1.0), (other, 1.0)], &dir.path().join("m.gguf")).unwrap_err();
        assert!(err.to_string().contains("gemma3"), "{err}");

        // A quantised factor: rewrite the type field of the first tensor to Q8_0 (8).
        let mut bytes = std::fs::read(&one).unwrap();
        let name = b"blk.0.attn_q.weight.lora_a";
        let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 16;
        bytes[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
        let quantised = dir.path().join("q.gguf");
        std::fs::write(&quantised, &bytes).unwrap();
        let err = merge(&[(one, 1.0), (quantised, 1.0)], &dir.path().join("m.gguf")).unwrap_err();
        assert!(err.to_string().contains("f16 or f32"), "{err}");

        let truncated = dir.path().join("t.gguf");
        std::fs::write(&truncated, &bytes[..40]).unwrap();
        let err = merge(&[(truncated, 1.0)], &dir.path().join("m.gguf")).unwrap_err();
        assert!(err.to_string().contains("not a readable GGUF"), "{err}");
    }

    #[test]
    fn half_precision_converts() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
    }
}
