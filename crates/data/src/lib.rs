//! ferroflow's data layer: dataset discovery, survey, prepare, decoding,
//! TF-exact image ops, augmentation and the input pipeline.

mod decode;
mod discover;
mod image;
mod stats;
mod survey;

pub use decode::{DEFAULT_MAX_PIXELS, DecodeError, DecodeOptions, ImageFormat, ImageInfo, decode_image, image_info};
pub use discover::{DiscoverError, Discovered, IMAGE_EXTENSIONS, ImageEntry, Split, discover};
pub use image::{Image, ImageF32, ImageU8};
pub use stats::{Bin, ChannelStats, Summary, edge_bins, equal_bins};
pub use survey::{ASPECT_EDGES, SurveyOptions, SurveyReport, Unreadable, survey};
