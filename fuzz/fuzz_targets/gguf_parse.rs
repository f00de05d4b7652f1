//! Fuzz target: `Gguf::parse` on arbitrary bytes must return `Ok` or `Err`, never panic, and
//! whatever it accepts must be safe to use: every metadata value and array element is read and
//! every tensor view's rows are touched.
#![no_main]

use edgellm_runtime::gguf::{Gguf, MetaValue};
use libfuzzer_sys::fuzz_target;

fn touch(v: &MetaValue<'_>) -> usize {
    match v {
        MetaValue::Str(s) => s.len(),
        MetaValue::Array(a) => {
            let n: usize = a.iter().map(|e| touch(&e)).sum();
            // Typed accessors must agree with iteration or fail cleanly.
            if let Ok(strings) = a.strings() {
                assert_eq!(strings.count(), a.len());
            }
            if let Ok(v) = a.to_i32_vec() {
                assert_eq!(v.len(), a.len());
            }
            if let Ok(v) = a.to_f32_vec() {
                assert_eq!(v.len(), a.len());
            }
            n + a.len()
        }
        _ => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else {
        return;
    };
    let mut sum = 0usize;
    for (key, value) in g.metadata() {
        assert!(g.get(key).is_some());
        sum = sum.wrapping_add(touch(value));
    }
    let _ = g.architecture();
    let _ = g.get_u32("general.alignment");
    for t in g.tensors() {
        assert_eq!(g.tensor(t.name).map(|x| x.offset), Some(t.offset));
        let v = t.view();
        assert_eq!(v.rows() * v.row_bytes(), t.n_bytes());
        for i in 0..v.rows() {
            let row = v.row(i);
            sum = sum.wrapping_add(row.first().copied().unwrap_or(0) as usize);
        }
        let _ = v.expect_shape(t.dims());
        assert!(v.expect_shape(t.dims()).is_ok());
    }
    std::hint::black_box(sum);
});
