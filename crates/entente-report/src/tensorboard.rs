//! TensorBoard event files: `tensorboard --logdir runs/` then shows entente's rounds next to a
//! team's other experiments.
//!
//! An event file is a sequence of TFRecords (little-endian length, masked CRC-32C of the
//! length, the bytes, masked CRC-32C of the bytes), each holding one `tensorflow.Event`
//! protocol buffer: first the file version, then one event per step with its scalar values as
//! `Summary.Value.simple_value`, which TensorBoard's scalar dashboard reads. Only the fields
//! entente writes are declared here, with the tags of TensorFlow's `event.proto` and
//! `summary.proto`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use entente_core::engine::RoundRecord;
use prost::Message;

/// The version string TensorBoard expects in a file's first event.
const FILE_VERSION: &str = "brain.Event:2";

/// Why an event file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Creating or writing the file failed.
    #[error("could not write the TensorBoard event file {path}: {source}")]
    Io {
        /// The event file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// `tensorflow.Event`, the fields entente writes.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The step (entente: the round).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// Set in a file's first event only.
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// The step's values.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// One value per tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`, as a scalar.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    /// The chart it belongs to, such as `test/accuracy`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The value.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The masked CRC-32C of a TFRecord: rotated and offset, so that a CRC of data that holds CRCs
/// is not itself easy to mistake for one.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `data` framed as one TFRecord.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Appends scalar events to one event file.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.SECONDS.entente` (TensorBoard finds files by the
    /// `tfevents` in their name) and writes the file-version event.
    pub fn create(dir: &Path) -> Result<Self, EventError> {
        let now = wall_time();
        let path = dir.join(format!("events.out.tfevents.{}.entente", now as u64));
        let file = File::create(&path).map_err(|source| EventError::Io {
            path: path.clone(),
            source,
        })?;
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        writer.write(&Event {
            wall_time: now,
            step: 0,
            file_version: Some(FILE_VERSION.to_string()),
            summary: None,
        })?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event at `step` holding every `(tag, value)` and flushes it, so a run that
    /// stops keeps its finished steps. Values that are not finite are left out.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<(), EventError> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| SummaryValue {
                tag: tag.clone(),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(&Event {
            wall_time: wall_time(),
            step: i64::try_from(step).unwrap_or(i64::MAX),
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    fn write(&mut self, event: &Event) -> Result<(), EventError> {
        let io = |source| EventError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .write_all(&tfrecord(&event.encode_to_vec()))
            .map_err(io)?;
        self.file.flush().map_err(io)
    }
}

/// The scalars of one round, by tag: `train/loss`; `test/accuracy` and `test/loss` (the
/// coordinator's held-out set); `federated/accuracy` and `federated/loss` (the sites' own test
/// splits); `round/accepted`, `round/excluded` and `round/seconds`; and per accepted site
/// `site/NAME/train_loss` and `site/NAME/examples`.
pub fn round_scalars(r: &RoundRecord) -> Vec<(String, f64)> {
    let mut out = vec![("train/loss".to_string(), r.train_loss)];
    for (prefix, metrics) in [("test", &r.test), ("federated", &r.federated)] {
        if let Some(m) = metrics {
            out.push((format!("{prefix}/accuracy"), m.accuracy));
            out.push((format!("{prefix}/loss"), m.loss));
        }
    }
    out.push(("round/accepted".to_string(), r.accepted.len() as f64));
    out.push(("round/excluded".to_string(), r.excluded.len() as f64));
    out.push(("round/seconds".to_string(), r.seconds));
    for ((site, loss), examples) in r
        .accepted
        .iter()
        .zip(&r.accepted_losses)
        .zip(&r.accepted_examples)
    {
        out.push((format!("site/{site}/train_loss"), *loss));
        out.push((format!("site/{site}/examples"), *examples as f64));
    }
    out
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_known_answers() {
        // The CRC-32C check value (RFC 3720, B.4), then TFRecord's mask of it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // The framing of an empty record: length 0, its masked CRC, nothing, the masked CRC
        // of nothing (CRC-32C of no bytes is 0, so the mask alone).
        let empty = tfrecord(b"");
        assert_eq!(&empty[..8], &[0; 8]);
        assert_eq!(&empty[12..], &0xa282_ead8u32.to_le_bytes());
    }

    #[test]
    fn an_event_encodes_as_tensorflow_lays_it_out() {
        let event = Event {
            wall_time: 0.0,
            step: 3,
            file_version: None,
            summary: Some(Summary {
                value: vec![SummaryValue {
                    tag: "a".into(),
                    simple_value: Some(1.0),
                }],
            }),
        };
        // step (field 2, varint 3); summary (field 5, 10 bytes): value (field 1, 8 bytes):
        // tag (field 1, "a"), simple_value (field 2, fixed32 1.0f).
        assert_eq!(
            event.encode_to_vec(),
            [
                0x10, 3, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15, 0, 0, 0x80, 0x3f
            ]
        );
    }
}
