// Moving LibTorch module state to and from the project's model file and from
// external weight dictionaries (torchvision / Keras, converted in Python),
// with names and shapes checked and reported.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>

#include "stemroi/model_file.hpp"

namespace stemroi {

using StateDict = std::map<std::string, torch::Tensor>;

NamedTensor tensor_to_named(const std::string& name, const torch::Tensor& t);
torch::Tensor named_to_tensor(const NamedTensor& t);

// Parameters and buffers of `module` under their dotted names.
StateDict module_state(const torch::nn::Module& module);

// Copies `state` into the module's parameters/buffers. Throws ValueError naming
// every missing key, unexpected key (strict) or shape mismatch, e.g.
// "shape mismatch for 'features.0.weight': weights have (64, 1, 3, 3), model expects (64, 3, 3, 3)".
void load_module_state(torch::nn::Module& module, const StateDict& state, bool strict,
                       const std::string& origin);

StateDict state_from_model_file(const ModelFile& file);
ModelFile model_file_from_state(const StateDict& state, std::map<std::string, std::string> metadata);

}  // namespace stemroi
