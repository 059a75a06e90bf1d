//! An adapter as a llama.cpp LoRA GGUF (`sqlora adapters export --format gguf-lora`), so that
//! a llama.cpp server can serve what sqlora trained: the metadata and tensor names llama.cpp's
//! own PEFT converter writes — `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, the base's `general.architecture`, and `blk.{i}.{proj}.weight.lora_a`
//! (`[r, in]`) / `.lora_b` (`[out, r]`) per adapted projection — in f32, so nothing is rounded.
//! llama.cpp scales by `alpha / r`; an rsLoRA adapter's `alpha / √r` is written as the alpha
//! that gives the same scale.
//!
//! Writes a file; never loads a model.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::DType;

use super::adapter::Adapter;
use crate::llm::LlmError;

/// Writes `adapter` for a base of GGUF architecture `arch` (`qwen2`, `llama`) to `path`.
pub fn write(adapter: &Adapter, arch: &str, name: &str, path: &Path) -> Result<(), LlmError> {
    let io = |e: std::io::Error| LlmError::Adapter(format!("writing {}: {e}", path.display()));
    let mut tensors = Vec::with_capacity(adapter.weights.len() * 2);
    for ((layer, target), pair) in &adapter.weights {
        let base = format!("blk.{layer}.{}.weight", target.gguf());
        for (which, t) in [("lora_a", &pair.a), ("lora_b", &pair.b)] {
            let t = t
                .to_dtype(DType::F32)?
                .to_device(&candle_core::Device::Cpu)?;
            tensors.push((
                format!("{base}.{which}"),
                QTensor::quantize(&t, GgmlDType::F32)?,
            ));
        }
    }
    let r = adapter.config.r as f32;
    let alpha = adapter.config.scale() as f32 * r;
    let meta = [
        ("general.type", gguf_file::Value::String("adapter".into())),
        (
            "general.architecture",
            gguf_file::Value::String(arch.into()),
        ),
        ("general.name", gguf_file::Value::String(name.into())),
        ("adapter.type", gguf_file::Value::String("lora".into())),
        ("adapter.lora.alpha", gguf_file::Value::F32(alpha)),
    ];
    let meta: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = path.with_extension("gguf.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    gguf_file::write(&mut f, &meta, &tensors)?;
    use std::io::Write;
    f.flush().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::super::adapter::{AdapterConfig, LoraPair, Target};
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn the_file_has_llama_cpp_names_shapes_and_scale() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AdapterConfig::new(4, 8.0, &[Target::Q]);
        config.use_rslora = true;
        let a = Tensor::arange(0f32, 4.0 * 6.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 6))
            .unwrap();
        let b = Tensor::ones((5, 4), DType::BF16, &Device::Cpu).unwrap();
        let adapter = Adapter {
            config,
            weights: [((3, Target::Q), LoraPair { a, b })].into_iter().collect(),
            sha256: String::new(),
            label: "t".into(),
        };
        let path = dir.path().join("t.gguf");
        write(&adapter, "qwen2", "t", &path).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        let s = |k: &str| c.metadata[k].to_string().unwrap().clone();
        assert_eq!(
            (s("general.type"), s("adapter.type")),
            ("adapter".into(), "lora".into())
        );
        assert_eq!(s("general.architecture"), "qwen2");
        // rsLoRA: scale 8/√4 = 4, written as alpha 16 (llama.cpp: 16 / r = 4).
        assert_eq!(c.metadata["adapter.lora.alpha"].to_f32().unwrap(), 16.0);
        let a = &c.tensor_infos["blk.3.attn_q.weight.lora_a"];
        let b = &c.tensor_infos["blk.3.attn_q.weight.lora_b"];
        assert_eq!((a.shape.dims(), b.shape.dims()), (&[4, 6][..], &[5, 4][..]));
        let back = c
            .tensor(&mut f, "blk.3.attn_q.weight.lora_a", &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap()[23],
            23.0
        );
    }
}
