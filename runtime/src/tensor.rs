//! `TensorView`: the `Gguf ─views─▶ TensorView` arrow. A typed, shaped window onto a tensor's
//! bytes in the mapped file, for model loaders (shape checks) and kernels (row access). Owns no
//! data and never copies it; decoding the bytes is the job of `quant` and `kernels`.

use crate::ggml_type::GgmlType;
use crate::gguf::GgufError;

/// A tensor's bytes with their type and shape. Built by [`crate::gguf::TensorInfo::view`],
/// which has validated the invariant the methods rely on: every dim is at least 1 and `data`
/// holds exactly `rows()` rows of `ggml_type.row_bytes(row_len())` bytes. (Fields are public
/// for reading and for tests that build views over synthetic data; such code keeps the
/// invariant itself.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    /// ggml order: `shape[0]` = ne0 (contiguous); unused dims are 1.
    pub shape: [usize; 4],
    pub n_dims: u32,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// A view over `data`. The GGUF parser guarantees the invariants; this constructor is
    /// crate-private so no other caller can break them.
    pub(crate) fn new(
        name: &'a str,
        ggml_type: GgmlType,
        shape: [usize; 4],
        n_dims: u32,
        data: &'a [u8],
    ) -> TensorView<'a> {
        TensorView {
            name,
            ggml_type,
            shape,
            n_dims,
            data,
        }
    }

    /// The tensor's name in the file.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Shape in ggml order, unused dims 1.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Number of dimensions the file declared.
    pub fn n_dims(&self) -> u32 {
        self.n_dims
    }

    /// All of the tensor's bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Total number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of rows: the product of every dimension but the first.
    pub fn rows(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Elements per row (ne0).
    pub fn row_len(&self) -> usize {
        self.shape[0]
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.data.len().checked_div(self.rows()).unwrap_or(0)
    }

    /// The bytes of row `i`.
    ///
    /// # Panics
    /// If `i >= rows()`, like slice indexing: row indices come from the model's code or are
    /// token ids the caller has already checked against the vocabulary size.
    pub fn row(&self, i: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }

    /// Checks the shape against `expected` (ggml order; missing trailing dims must be 1), with
    /// an error naming the tensor and both shapes.
    pub fn expect_shape(&self, expected: &[u64]) -> Result<(), GgufError> {
        let matches = expected.len() <= 4
            && (0..4).all(|i| {
                let want = expected.get(i).copied().unwrap_or(1);
                self.shape[i] as u64 == want
            });
        if matches {
            Ok(())
        } else {
            Err(GgufError::ShapeMismatch {
                tensor: self.name.to_string(),
                expected: expected.to_vec(),
                found: self.shape[..self.n_dims as usize]
                    .iter()
                    .map(|&d| d as u64)
                    .collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(shape: [usize; 4], n_dims: u32, data: &[u8]) -> TensorView<'_> {
        TensorView::new("t", GgmlType::Q4_1, shape, n_dims, data)
    }

    #[test]
    fn rows_are_contiguous_slices() {
        // 3 rows of 64 Q4_1 elements = 2 blocks of 20 bytes each.
        let data: Vec<u8> = (0..120u8).collect();
        let v = view([64, 3, 1, 1], 2, &data);
        assert_eq!(v.rows(), 3);
        assert_eq!(v.row_len(), 64);
        assert_eq!(
            v.row_bytes(),
            GgmlType::Q4_1.row_bytes(64).unwrap() as usize
        );
        assert_eq!(v.row(0), &data[0..40]);
        assert_eq!(v.row(2), &data[80..120]);
        assert_eq!(v.n_elements(), 192);
    }

    #[test]
    fn expect_shape_names_both_shapes() {
        let data = [0u8; 120];
        let v = view([64, 3, 1, 1], 2, &data);
        assert!(v.expect_shape(&[64, 3]).is_ok());
        assert!(v.expect_shape(&[64, 3, 1, 1]).is_ok());
        assert!(v.expect_shape(&[64]).is_err());
        assert!(v.expect_shape(&[64, 3, 1, 1, 1]).is_err());
        let msg = v.expect_shape(&[3, 64]).unwrap_err().to_string();
        assert_eq!(
            msg,
            "tensor 't': shape [64, 3] does not match the expected [3, 64]"
        );
    }
}
