//! ferroflow's data layer: dataset discovery, survey, prepare, decoding,
//! TF-exact image ops, augmentation and the input pipeline.

mod dataset;
mod decode;
mod decode_planar;
mod discover;
mod dump;
mod example_codec;
mod folder;
mod image;
mod image_ops;
mod pipeline;
mod prepare;
mod preprocess;
mod resize;
mod resize_ycc;
mod slim_preprocess;
mod split;
mod stats;
mod survey;
mod ycc;

pub use dataset::{
    DATASET_JSON, Dataset, DatasetError, DatasetMeta, Encoding, LABELS_TXT, Skipped, SplitMeta, Task, shard_name,
};
pub use decode::{
    DEFAULT_MAX_PIXELS, DecodeError, DecodeOptions, ImageFormat, ImageInfo, decode_image, image_info, jpeg_simd,
    recycle_decoded,
};
pub use decode_planar::{Decoded, decode_image_planar, recycle_planar};
pub use discover::{DiscoverError, Discovered, IMAGE_EXTENSIONS, ImageEntry, Split, discover};
pub use dump::{DumpError, dump};
pub use example_codec::{DecodedExample, ExampleError, decode_example, decode_example_planar, detect_encoding};
pub use ferroflow_rng::Rng;
pub use folder::{FolderDataset, FolderError, FolderFiles, list_folder, list_paired_folder, load_folder};
pub use image::{Image, ImageF32, ImageU8};
pub use image_ops::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, central_crop, crop, flip_left_right,
    flip_up_down, pad_to_bounding_box, per_image_standardization, resize_with_crop_or_pad, rgb_to_grayscale,
};
pub use pipeline::{Batch, Cursor, Label, Mode, Pipeline, PipelineConfig, PipelineError, Shard, Source, shuffle_order};
pub use prepare::{IMAGES_PER_SHARD, PrepareError, PrepareOptions, PrepareReport, prepare};
pub use preprocess::{Augment, Crop, Order, Preprocess, PreprocessError};
pub use resize::{
    ResizeMethod, ResizeOptions, resize, resize_bilinear_legacy, resize_bilinear_u8, resize_bilinear_u8_into_chw,
    resize_u8,
};
pub use resize_ycc::resize_ycc_into_chw;
pub use slim_preprocess::{
    INCEPTION_CENTRAL_FRACTION, SlimPreprocessing, VGG_MEANS, VGG_RESIZE_SIDE_MAX, VGG_RESIZE_SIDE_MIN,
    sample_distorted_bounding_box,
};
pub use split::split_items;
pub use stats::{Bin, ChannelStats, Summary, edge_bins, equal_bins};
pub use survey::{ASPECT_EDGES, SurveyOptions, SurveyReport, Unreadable, survey};
pub use ycc::{YccImage, YccPlane};
