//! Writes tensors as NumPy .npy files (format 1.0). Twenty lines of a
//! stable format; not worth a dependency.

use crate::transform::Tensor;
use std::io::{self, Write};

pub fn write_npy(w: &mut impl Write, t: &Tensor) -> io::Result<()> {
    let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = if shape.len() == 1 {
        format!("{},", shape[0])
    } else {
        shape.join(", ")
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}",
        t.dtype.numpy_descr(),
        shape
    );
    // Magic (6) + version (2) + header length (2) + header, padded with
    // spaces to a multiple of 64, ending in a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    w.write_all(&t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::DType;

    #[test]
    fn header_is_aligned() {
        let t = Tensor::from_ids("x", DType::Int64, &[1, 2, 3]);
        let mut v = Vec::new();
        write_npy(&mut v, &t).unwrap();
        let hl = u16::from_le_bytes([v[8], v[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert!(std::str::from_utf8(&v[10..10 + hl])
            .unwrap()
            .contains("'shape': (1, 3)"));
        assert_eq!(v.len(), 10 + hl + 24);
    }
}
