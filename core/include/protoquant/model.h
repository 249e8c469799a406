// The three trained parts of a ProtoQuant model, as the stages and metrics see them.
#pragma once

#include <memory>

#include "protoquant/backbone.h"
#include "protoquant/head.h"
#include "protoquant/quantizer.h"

namespace protoquant {

struct Model {
  std::shared_ptr<Backbone> backbone;
  std::shared_ptr<Quantizer> quantizer;
  std::shared_ptr<Head> head;
};

}  // namespace protoquant
