// Codebook initialisation shared by the quantizers: data-free (orthogonal, uniform, normal) and
// data-dependent (k-means: k-means++ seeding, then Lloyd iterations, all as GEMMs).
#pragma once

#include <string>

#include <torch/torch.h>

namespace protoquant::quantizers {

// A K x D codebook from a data-free init ("orthogonal", "uniform", "normal"); "kmeans" returns
// an orthogonal placeholder to be replaced by kmeans() once data is seen.
torch::Tensor initial_codebook(const std::string& init, int64_t codes, int64_t dim);

// k-means on the rows of `data` (N x D): k-means++ seeding and `iterations` Lloyd steps under the
// squared euclidean distance, or on the unit sphere (spherical k-means) when `cosine`. Uses
// torch's global generator. Empty clusters are re-seeded from the points farthest from their code.
// The assignment step takes rows in blocks of at most `block_bytes` of distances, so memory stays
// bounded whatever the number of codes.
torch::Tensor kmeans(const torch::Tensor& data, int64_t codes, int64_t iterations, bool cosine,
                     int64_t block_bytes = int64_t{64} << 20);

// A codebook from k-means on real feature vectors. Under the cosine metric the spherical
// centres are scaled to the data's mean norm, so substituted codewords feed the frozen head g
// vectors of the right magnitude.
torch::Tensor kmeans_codebook(const torch::Tensor& data, int64_t codes, int64_t iterations, bool cosine);

}  // namespace protoquant::quantizers
