//! The rules one fragment must meet for its pipeline, checked in the
//! spec's error order (after version and pipeline): kind mismatch,
//! malformed, too large, invalid content. Tile rules live here, in one
//! place: the output rectangle inside the output, the halo it needs.

use super::{Pipeline, Plan};
use crate::reassembly::{Fragment, Limits, Reject};
use crate::transform::resize::ResizePlan;
use crate::wire::image::IMAGE_HEADER_LEN;
use crate::wire::text::TEXT_HEADER_LEN;
use crate::wire::{ErrorCode, HeaderRepr, ImageFragment, ImageRepr, Kind, TextChunk, TextRepr};

fn reject(code: ErrorCode, message: String) -> Reject {
    Reject { code, message }
}

impl Pipeline {
    /// Checks a data fragment (`body`: the datagram after the common
    /// header) against this pipeline and the limits; the fragment's
    /// content, borrowed, if it passes.
    pub fn check_fragment<'a>(
        &self,
        header: &HeaderRepr,
        datagram_len: usize,
        body: &'a [u8],
        limits: &Limits,
    ) -> Result<Fragment<'a>, Reject> {
        let kind = header.kind;
        if !self.accepts_kind(kind) {
            let msg = format!(
                "pipeline {} ({}) does not take {kind:?} datagrams",
                self.id, self.name
            );
            return Err(reject(ErrorCode::KindMismatch, msg));
        }
        if kind.is_image() {
            if let Ok(fmt) = ImageRepr::peek_pixel_format(body) {
                if !self.pixel_formats.contains(&fmt) {
                    let msg = format!(
                        "pipeline {} does not take pixel format {}",
                        self.id,
                        fmt.name()
                    );
                    return Err(reject(ErrorCode::KindMismatch, msg));
                }
            }
        }
        if datagram_len > limits.max_datagram {
            let msg = format!(
                "datagram of {datagram_len} bytes exceeds max_datagram {}",
                limits.max_datagram
            );
            return Err(Reject::malformed(msg));
        }
        let fragment = self.parse_fragment(kind, body)?;
        if header.count > limits.max_fragments {
            let msg = format!(
                "count {} exceeds max_fragments {}",
                header.count, limits.max_fragments
            );
            return Err(reject(ErrorCode::TooLarge, msg));
        }
        match &fragment {
            Fragment::Image { repr, .. } => {
                let px = repr.width as u64 * repr.height as u64;
                if px > limits.max_image_pixels {
                    let msg = format!(
                        "{}x{} exceeds max_image_pixels {}",
                        repr.width, repr.height, limits.max_image_pixels
                    );
                    return Err(reject(ErrorCode::TooLarge, msg));
                }
                self.check_halo(repr)?;
            }
            Fragment::Text { repr, .. } => {
                if repr.total_len > limits.max_text_bytes {
                    let msg = format!(
                        "total_len {} exceeds max_text_bytes {}",
                        repr.total_len, limits.max_text_bytes
                    );
                    return Err(reject(ErrorCode::TooLarge, msg));
                }
            }
        }
        Ok(fragment)
    }

    /// The wire checks of the fragment's own header; a tile's output
    /// rectangle must lie inside the pipeline's output.
    fn parse_fragment<'a>(&self, kind: Kind, body: &'a [u8]) -> Result<Fragment<'a>, Reject> {
        let malformed = |e: crate::wire::WireError| Reject::malformed(e.to_string());
        match kind {
            Kind::ImageRows | Kind::ImageTile => {
                let f = ImageFragment::new_checked(body).map_err(malformed)?;
                let repr = ImageRepr::parse(kind, &f).map_err(malformed)?;
                if let (Some(out), Plan::Image(plan)) = (repr.out_rect, &self.plan) {
                    if !out.inside(plan.out_width(), plan.out_height()) {
                        return Err(Reject::malformed(format!(
                            "tile output rectangle {out:?} lies outside the {}x{} output",
                            plan.out_width(),
                            plan.out_height()
                        )));
                    }
                }
                Ok(Fragment::Image {
                    repr,
                    pixels: &body[IMAGE_HEADER_LEN..],
                })
            }
            Kind::TextChunk => {
                let c = TextChunk::new_checked(body).map_err(malformed)?;
                let repr = TextRepr::parse(&c).map_err(malformed)?;
                Ok(Fragment::Text {
                    repr,
                    bytes: &body[TEXT_HEADER_LEN..],
                })
            }
            _ => Err(Reject::malformed(format!("{kind:?} is not a data kind"))),
        }
    }

    /// A tile must hold the input windows of every pixel of its output
    /// rectangle (INVALID_CONTENT otherwise).
    fn check_halo(&self, repr: &ImageRepr) -> Result<(), Reject> {
        let (Some(out), Plan::Image(plan)) = (repr.out_rect, &self.plan) else {
            return Ok(());
        };
        let need = ResizePlan::halo_rect(
            plan.resampling,
            repr.width as u32,
            repr.height as u32,
            plan.out_width(),
            plan.out_height(),
            out,
        );
        if repr.rect.contains(&need) {
            Ok(())
        } else {
            Err(Reject::invalid(format!(
                "tile input {:?} lacks the halo for output {out:?}: needs {need:?}",
                repr.rect
            )))
        }
    }
}
