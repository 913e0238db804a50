// Input normalisation presets of the studies' networks, defined once.
//   torchvision: RGB on [0, 1], (x - mean) / std with ImageNet statistics
//   caffe (Keras VGG16 preprocess_input): RGB -> BGR on [0, 255], minus the
//          BGR ImageNet means, no std
//   tf / mobilenet (Keras mobilenet_v2 preprocess_input): [0, 255] -> [-1, 1]
//   unit: [0, 1], nothing else
#pragma once
#include <array>
#include <string>

#include "stemroi/errors.hpp"

namespace stemroi {

struct Normalization {
  const char* name;
  float input_scale;           // multiply [0,1] input by this first (1 or 255)
  std::array<float, 3> mean;   // per output channel, after scale and channel order
  std::array<float, 3> std;    // divide by this
  bool bgr;                    // reverse channel order (RGB -> BGR)
};

inline constexpr Normalization kTorchvision{"torchvision", 1.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}, false};
inline constexpr Normalization kCaffe{"caffe", 255.0f, {103.939f, 116.779f, 123.68f}, {1.0f, 1.0f, 1.0f}, true};
inline constexpr Normalization kTF{"tf", 2.0f, {1.0f, 1.0f, 1.0f}, {1.0f, 1.0f, 1.0f}, false};  // x*2 - 1
inline constexpr Normalization kUnit{"unit", 1.0f, {0.0f, 0.0f, 0.0f}, {1.0f, 1.0f, 1.0f}, false};

// Input images are grey (or RGB) on [0, 1]; output channel c is
// (x[c'] * input_scale - mean[c]) / std[c] where c' = bgr ? 2 - c : c.
inline const Normalization& normalization_preset(const std::string& name) {
  if (name == "torchvision") return kTorchvision;
  if (name == "caffe") return kCaffe;
  if (name == "tf" || name == "mobilenet") return kTF;
  if (name == "unit" || name == "none") return kUnit;
  throw ValueError(concat("unknown normalisation preset '", name,
                          "' (expected 'torchvision', 'caffe', 'tf'/'mobilenet' or 'unit')"));
}

}  // namespace stemroi
