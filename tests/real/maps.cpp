// std::map, std::string, std::vector and std::unordered_map under heavy
// churn; the output must not depend on the allocator.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

int main()
{
    std::map<std::string, std::vector<int>> index;
    std::unordered_map<uint64_t, std::string> names;
    uint64_t seed = 42;
    for (int i = 0; i < 400000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        std::string key = "k" + std::to_string(seed % 50000) + std::string(seed % 40, 'x');
        index[key].push_back(i);
        names[seed % 100000] = key + "/" + std::to_string(i);
        if (i % 5 == 0)
            index.erase(index.begin());
    }
    std::vector<std::unique_ptr<std::string>> owned;
    for (auto &kv : index)
        owned.push_back(std::make_unique<std::string>(kv.first + ":" + std::to_string(kv.second.size())));
    std::sort(owned.begin(), owned.end(), [](const auto &a, const auto &b) { return *a > *b; });
    uint64_t sum = 0;
    for (auto &kv : names)
        sum += kv.second.size() * (kv.first % 7);
    std::cout << index.size() << " " << names.size() << " " << sum << "\n";
    for (size_t i = 0; i < owned.size(); i += owned.size() / 5)
        std::cout << *owned[i] << "\n";
    return 0;
}
