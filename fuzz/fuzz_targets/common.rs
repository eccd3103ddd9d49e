//! The real model, loaded once per fuzzing process (`$EMBER_MODEL`, else `models/…` at the
//! repository root; `fuzz/run.sh` fetches it).

use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use std::sync::OnceLock;

pub fn model() -> &'static Model<'static> {
    static MODEL: OnceLock<Model<'static>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = std::env::var("EMBER_MODEL").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
            .into()
        });
        let file: &'static MappedFile = Box::leak(Box::new(
            MappedFile::open(&path).expect("the model (run fuzz/run.sh)"),
        ));
        let g = Gguf::parse(file.bytes()).expect("gguf");
        let mem: &'static mut [u8] =
            Box::leak(vec![0u8; Model::memory_needed(&g).expect("plan")].into_boxed_slice());
        let mut arena = Arena::new(mem);
        Model::load(g, &mut arena, Kernels::best()).expect("model")
    })
}
