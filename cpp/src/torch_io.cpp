#include "stemroi/torch_io.hpp"

#include <cstring>
#include <sstream>

#include "stemroi/errors.hpp"

namespace stemroi {

namespace {
DType to_dtype(c10::ScalarType s) {
  switch (s) {
    case torch::kFloat32: return DType::F32;
    case torch::kFloat64: return DType::F64;
    case torch::kFloat16: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kInt64: return DType::I64;
    case torch::kInt32: return DType::I32;
    case torch::kInt16: return DType::I16;
    case torch::kInt8: return DType::I8;
    case torch::kUInt8: return DType::U8;
    case torch::kBool: return DType::BOOL;
    default: throw TypeError(concat("cannot store tensors of dtype ", c10::toString(s)));
  }
}
c10::ScalarType to_scalar(DType d) {
  switch (d) {
    case DType::F32: return torch::kFloat32;
    case DType::F64: return torch::kFloat64;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
  }
  return torch::kFloat32;
}
std::string sizes_str(at::IntArrayRef s) { return shape_str(std::vector<int64_t>(s.begin(), s.end())); }
}  // namespace

NamedTensor tensor_to_named(const std::string& name, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  NamedTensor out;
  out.name = name;
  out.dtype = to_dtype(c.scalar_type());
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.data.resize(c.numel() * c.element_size());
  if (!out.data.empty()) std::memcpy(out.data.data(), c.data_ptr(), out.data.size());
  return out;
}

torch::Tensor named_to_tensor(const NamedTensor& t) {
  auto out = torch::empty(t.shape, torch::TensorOptions().dtype(to_scalar(t.dtype)));
  if (!t.data.empty()) std::memcpy(out.data_ptr(), t.data.data(), t.data.size());
  return out;
}

StateDict module_state(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

void load_module_state(torch::nn::Module& module, const StateDict& state, bool strict,
                       const std::string& origin) {
  StateDict target = module_state(module);
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, t] : target) {
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
    } else if (!it->second.sizes().equals(t.sizes())) {
      mismatched.push_back(concat("'", name, "': weights have ", sizes_str(it->second.sizes()),
                                  ", model expects ", sizes_str(t.sizes())));
    }
  }
  for (const auto& [name, t] : state)
    if (!target.count(name)) unexpected.push_back(name);
  std::ostringstream msg;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    msg << " " << what << " (" << v.size() << "): ";
    for (size_t i = 0; i < v.size() && i < 8; ++i) msg << (i ? ", " : "") << v[i];
    if (v.size() > 8) msg << ", ...";
    msg << ".";
  };
  list("shape mismatch", mismatched);
  list("missing", missing);
  if (strict) list("unexpected", unexpected);
  if (!msg.str().empty()) throw ValueError(concat("weights from ", origin, " do not fit the model:", msg.str()));
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : target) {
    const auto& src = state.at(name);
    t.copy_(src.to(t.dtype()).to(t.device()));
  }
}

StateDict state_from_model_file(const ModelFile& file) {
  StateDict out;
  for (const auto& t : file.tensors) out[t.name] = named_to_tensor(t);
  return out;
}

ModelFile model_file_from_state(const StateDict& state, std::map<std::string, std::string> metadata) {
  ModelFile f;
  f.metadata = std::move(metadata);
  for (const auto& [name, t] : state) f.tensors.push_back(tensor_to_named(name, t));
  return f;
}

}  // namespace stemroi
