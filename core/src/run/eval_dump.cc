#include "protoquant/eval_dump.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

absl::Status write_npy(const fs::path& path, const torch::Tensor& array) {
  const torch::Tensor a = array.detach().to(torch::kCPU).contiguous();
  std::string descr;
  switch (a.scalar_type()) {
    case torch::kFloat32: descr = "<f4"; break;
    case torch::kFloat64: descr = "<f8"; break;
    case torch::kInt64: descr = "<i8"; break;
    case torch::kInt32: descr = "<i4"; break;
    case torch::kUInt8: descr = "|u1"; break;
    case torch::kBool: descr = "|b1"; break;
    default:
      return absl::InvalidArgumentError(fmt::format("{}: no NumPy type for {}", path.string(), c10::toString(a.scalar_type())));
  }
  std::string shape;
  for (int64_t d : a.sizes()) shape += fmt::format("{}, ", d);
  if (a.dim() > 1) shape.resize(shape.size() - 2);  // (2, 3); a 1-D shape keeps its comma: (5,)
  if (a.dim() == 1) shape.resize(shape.size() - 1);
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  // Magic (6) + version (2) + length (2) + header + '\n', padded with spaces to 64 bytes.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>((header.size() >> 8) & 0xff));
  out += header;
  out.append(static_cast<const char*>(a.data_ptr()), a.numel() * a.element_size());
  return write_file_atomic(path, out);
}

EvalDump::EvalDump() : state_(std::make_shared<State>()) {}

EvalDump EvalDump::scoped(const std::string& prefix) const {
  EvalDump view = *this;
  view.prefix_ = prefix_ + prefix + "/";
  return view;
}

void EvalDump::append(const std::string& name, const torch::Tensor& rows, const std::string& description) {
  Array& array = state_->arrays[prefix_ + name];
  array.parts.push_back(rows.detach().to(torch::kCPU).clone());
  array.description = description;
}

void EvalDump::set(const std::string& name, const torch::Tensor& value, const std::string& description) {
  Array& array = state_->arrays[prefix_ + name];
  array.parts = {value.detach().to(torch::kCPU).clone()};
  array.description = description;
}

void EvalDump::note(const std::string& key, const nlohmann::json& value) {
  state_->notes[prefix_ + key] = value;
}

absl::Status EvalDump::write(const fs::path& dir) const {
  nlohmann::json index = {{"format", "NumPy .npy, C order, little-endian; load with numpy.load"},
                          {"arrays", nlohmann::json::object()},
                          {"notes", state_->notes}};
  for (const auto& [name, array] : state_->arrays) {
    const torch::Tensor whole = array.parts.size() == 1 ? array.parts.front() : torch::cat(array.parts);
    const fs::path file = dir / (name + ".npy");
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    if (ec) return absl::PermissionDeniedError(fmt::format("{}: cannot create ({})", file.parent_path().string(), ec.message()));
    PQ_RETURN_IF_ERROR(write_npy(file, whole));
    index["arrays"][name] = {{"file", name + ".npy"},
                             {"shape", whole.sizes().vec()},
                             {"dtype", std::string(c10::toString(whole.scalar_type()))},
                             {"description", array.description}};
  }
  return write_file_atomic(dir / "dump.json", index.dump(2) + "\n");
}

}  // namespace protoquant
