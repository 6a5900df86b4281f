//! Job specs in the stored graph: a field at a time, with every name and every settings block
//! written once in a table and referred to by number. A million-job grid repeats a few hundred
//! names and a few thousand settings; read back as JSON, each spec cost a parse and an
//! allocation per name, which was most of a restart.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Malformed, Reader, put_bytes, put_varint};
use crate::graph::{JobSpec, TptSource};
use crate::spec::{Indicator, Objective, ProjectorSettings, PromptSettings};
use crate::symbol::Symbol;

const SYNTHETIC: u8 = 0;
const TRAIN: u8 = 1;
const TRANSFER: u8 = 2;
const TPT_TASK: u8 = 3;
const TPT_PROJECTED: u8 = 4;
const ACTIVATIONS: u8 = 5;
const PROJECTOR: u8 = 6;
const CROSS_MODEL: u8 = 7;

/// Writes specs, collecting the names and settings they use into tables.
#[derive(Default)]
pub struct SpecWriter {
    names: HashMap<Symbol, u32>,
    name_list: Vec<Symbol>,
    /// Settings, gates' indicators: the JSON of each distinct value.
    blobs: HashMap<Vec<u8>, u32>,
    blob_list: Vec<Vec<u8>>,
}

impl SpecWriter {
    /// The tables, to be written before the specs that refer to them.
    pub fn tables(&self, out: &mut Vec<u8>) {
        put_varint(out, self.name_list.len() as u64);
        for n in &self.name_list {
            put_bytes(out, n.as_bytes());
        }
        put_varint(out, self.blob_list.len() as u64);
        for b in &self.blob_list {
            put_bytes(out, b);
        }
    }

    fn name(&mut self, out: &mut Vec<u8>, n: Symbol) {
        let next = self.name_list.len() as u32;
        let k = *self.names.entry(n).or_insert(next);
        if k == next {
            self.name_list.push(n);
        }
        put_varint(out, u64::from(k));
    }

    pub fn blob<T: Serialize>(&mut self, out: &mut Vec<u8>, value: &T) {
        let json = serde_json::to_vec(value).unwrap_or_default();
        let next = self.blob_list.len() as u32;
        let k = match self.blobs.get(&json) {
            Some(&k) => k,
            None => {
                self.blobs.insert(json.clone(), next);
                self.blob_list.push(json);
                next
            }
        };
        put_varint(out, u64::from(k));
    }

    pub fn spec(&mut self, out: &mut Vec<u8>, spec: &JobSpec) {
        match spec {
            JobSpec::Synthetic {
                index,
                duration_ms,
                fail,
                payload_bytes,
            } => {
                out.push(SYNTHETIC);
                put_varint(out, u64::from(*index));
                put_varint(out, u64::from(*duration_ms));
                out.push(u8::from(*fail));
                put_varint(out, u64::from(*payload_bytes));
            }
            JobSpec::Train {
                task,
                model,
                seed,
                settings,
            } => {
                out.push(TRAIN);
                self.name(out, *task);
                self.name(out, *model);
                put_varint(out, *seed);
                self.blob(out, &**settings);
            }
            JobSpec::Transfer {
                src,
                tgt,
                model,
                seed,
                split,
            } => {
                out.push(TRANSFER);
                for n in [src, tgt, model, split] {
                    self.name(out, *n);
                }
                put_varint(out, *seed);
            }
            JobSpec::Tpt {
                source,
                tgt,
                model,
                seed,
                settings,
                stop_when_matched,
            } => {
                match source {
                    TptSource::Task { task } => {
                        out.push(TPT_TASK);
                        self.name(out, *task);
                    }
                    TptSource::Projected {
                        task,
                        model,
                        objective,
                    } => {
                        out.push(TPT_PROJECTED);
                        self.name(out, *task);
                        self.name(out, *model);
                        out.push(objective_byte(*objective));
                    }
                }
                self.name(out, *tgt);
                self.name(out, *model);
                put_varint(out, *seed);
                self.blob(out, &**settings);
                out.push(u8::from(*stop_when_matched));
            }
            JobSpec::Activations { task, model, seed } => {
                out.push(ACTIVATIONS);
                self.name(out, *task);
                self.name(out, *model);
                put_varint(out, *seed);
            }
            JobSpec::Projector {
                src_model,
                tgt_model,
                objective,
                train_tasks,
                seed,
                settings,
            } => {
                out.push(PROJECTOR);
                self.name(out, *src_model);
                self.name(out, *tgt_model);
                out.push(objective_byte(*objective));
                put_varint(out, train_tasks.len() as u64);
                for t in train_tasks {
                    self.name(out, *t);
                }
                put_varint(out, *seed);
                self.blob(out, &**settings);
            }
            JobSpec::CrossModel {
                task,
                src_model,
                tgt_model,
                objective,
                held_out,
                seed,
                split,
            } => {
                out.push(CROSS_MODEL);
                for n in [task, src_model, tgt_model, split] {
                    self.name(out, *n);
                }
                out.push(objective_byte(*objective));
                out.push(u8::from(*held_out));
                put_varint(out, *seed);
            }
        }
    }
}

fn objective_byte(o: Objective) -> u8 {
    match o {
        Objective::Distance => 0,
        Objective::Task => 1,
    }
}

/// Reads specs written by a [`SpecWriter`], each table entry decoded once.
pub struct SpecReader<'a> {
    names: Vec<Symbol>,
    blobs: Vec<&'a [u8]>,
    prompt_settings: Vec<Option<PromptSettings>>,
    projector_settings: Vec<Option<ProjectorSettings>>,
    indicators: Vec<Option<Indicator>>,
}

impl<'a> SpecReader<'a> {
    /// The tables at the front of `r`.
    pub fn tables(r: &mut Reader<'a>) -> Result<SpecReader<'a>, Malformed> {
        let n = r.usize()?;
        // Every entry takes a byte at least: a corrupt count reserves nothing.
        if n > r.b.len() {
            return Err(Malformed);
        }
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            let text = std::str::from_utf8(r.bytes()?).map_err(|_| Malformed)?;
            names.push(Symbol::new(text));
        }
        let n = r.usize()?;
        if n > r.b.len() {
            return Err(Malformed);
        }
        let blobs = (0..n).map(|_| r.bytes()).collect::<Result<Vec<_>, _>>()?;
        Ok(SpecReader {
            names,
            prompt_settings: vec![None; n],
            projector_settings: vec![None; n],
            indicators: vec![None; n],
            blobs,
        })
    }

    fn name(&self, r: &mut Reader) -> Result<Symbol, Malformed> {
        self.names.get(r.usize()?).copied().ok_or(Malformed)
    }

    /// Table entry `k` as a `T`, parsed the first time it is asked for.
    fn cached<T: DeserializeOwned + Clone>(
        blobs: &[&[u8]],
        cache: &mut [Option<T>],
        r: &mut Reader,
    ) -> Result<T, Malformed> {
        let k = r.usize()?;
        let slot = cache.get_mut(k).ok_or(Malformed)?;
        if slot.is_none() {
            *slot = Some(serde_json::from_slice(blobs[k]).map_err(|_| Malformed)?);
        }
        slot.clone().ok_or(Malformed)
    }

    pub fn indicator(&mut self, r: &mut Reader) -> Result<Indicator, Malformed> {
        Self::cached(&self.blobs, &mut self.indicators, r)
    }

    pub fn spec(&mut self, r: &mut Reader) -> Result<JobSpec, Malformed> {
        let objective = |r: &mut Reader| match r.byte()? {
            0 => Ok(Objective::Distance),
            1 => Ok(Objective::Task),
            _ => Err(Malformed),
        };
        let flag = |r: &mut Reader| match r.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed),
        };
        Ok(match r.byte()? {
            SYNTHETIC => JobSpec::Synthetic {
                index: r.u32()?,
                duration_ms: r.u32()?,
                fail: flag(r)?,
                payload_bytes: r.u32()?,
            },
            TRAIN => JobSpec::Train {
                task: self.name(r)?,
                model: self.name(r)?,
                seed: r.varint()?,
                settings: Box::new(Self::cached(&self.blobs, &mut self.prompt_settings, r)?),
            },
            TRANSFER => JobSpec::Transfer {
                src: self.name(r)?,
                tgt: self.name(r)?,
                model: self.name(r)?,
                split: self.name(r)?,
                seed: r.varint()?,
            },
            tag @ (TPT_TASK | TPT_PROJECTED) => JobSpec::Tpt {
                source: if tag == TPT_TASK {
                    TptSource::Task {
                        task: self.name(r)?,
                    }
                } else {
                    TptSource::Projected {
                        task: self.name(r)?,
                        model: self.name(r)?,
                        objective: objective(r)?,
                    }
                },
                tgt: self.name(r)?,
                model: self.name(r)?,
                seed: r.varint()?,
                settings: Box::new(Self::cached(&self.blobs, &mut self.prompt_settings, r)?),
                stop_when_matched: flag(r)?,
            },
            ACTIVATIONS => JobSpec::Activations {
                task: self.name(r)?,
                model: self.name(r)?,
                seed: r.varint()?,
            },
            PROJECTOR => JobSpec::Projector {
                src_model: self.name(r)?,
                tgt_model: self.name(r)?,
                objective: objective(r)?,
                train_tasks: {
                    let n = r.usize()?;
                    if n > r.b.len() {
                        return Err(Malformed);
                    }
                    (0..n).map(|_| self.name(r)).collect::<Result<_, _>>()?
                },
                seed: r.varint()?,
                settings: Box::new(Self::cached(&self.blobs, &mut self.projector_settings, r)?),
            },
            CROSS_MODEL => JobSpec::CrossModel {
                task: self.name(r)?,
                src_model: self.name(r)?,
                tgt_model: self.name(r)?,
                split: self.name(r)?,
                objective: objective(r)?,
                held_out: flag(r)?,
                seed: r.varint()?,
            },
            _ => return Err(Malformed),
        })
    }
}
