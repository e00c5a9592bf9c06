// OwnerRecords (broker/owner_records.h): the owner -> uid record that lets
// only the registering uid adopt an owner after a broker restart (issue 9).
#include "broker/owner_records.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/unique_name.h"

namespace dsb::broker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using dsb::testing::ScratchDir;

constexpr uid_t kAlice = 4242001;
constexpr uid_t kBob = 4242002;

void WriteText(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

TEST(OwnerRecords, OnlyTheRecordedUidMayAdoptAndRecordsOfOtherInstancesAreDropped) {
  ScratchDir dir("dsbowners");
  const fs::path file = OwnerRecords::Beside(dir.path() / "dsb.sock");
  EXPECT_EQ(file.filename(), "dsb.sock.owners");
  {
    OwnerRecords w;
    ASSERT_TRUE(w.Load(file, {}).ok());  // missing file: no records, no error
    EXPECT_EQ(w.size(), 0u);
    w.Set("exch01", 7, {.instance = 111, .uid = kAlice});
    w.Set("exch01", 8, {.instance = 111, .uid = kBob});
    w.Set("exch02", 7, {.instance = 222, .uid = kBob});
    ASSERT_TRUE(w.Save().ok());
  }
  struct stat st{};
  ASSERT_EQ(::lstat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  OwnerRecords r;
  // exch02's segment was re-created (another instance): its record goes.
  ASSERT_TRUE(r.Load(file, {{"exch01", 111}, {"exch02", 333}}).ok());
  EXPECT_EQ(r.size(), 2u);
  EXPECT_EQ(r.AdoptionRefusal("exch01", 7, kAlice), std::nullopt);
  const auto refused = r.AdoptionRefusal("exch01", 7, kBob);
  ASSERT_TRUE(refused);
  EXPECT_THAT(*refused, HasSubstr("owner 7 of target 'exch01' was registered by uid " +
                                  std::to_string(kAlice)));
  EXPECT_THAT(*refused, HasSubstr("uid " + std::to_string(kBob) + " "));
  EXPECT_EQ(r.AdoptionRefusal("exch01", 8, kBob), std::nullopt);
  // Unrecorded: root (and the broker's own uid, which this test runs as) only.
  EXPECT_TRUE(r.AdoptionRefusal("exch02", 7, kBob));
  EXPECT_EQ(r.AdoptionRefusal("exch02", 7, ::geteuid()), std::nullopt);
  EXPECT_EQ(r.AdoptionRefusal("exch02", 7, 0), std::nullopt);

  r.Retain([](const std::string&, std::uint32_t owner) { return owner == 8; });
  r.Erase("exch01", 99);  // absent: nothing happens
  ASSERT_TRUE(r.Save().ok());
  OwnerRecords again;
  ASSERT_TRUE(again.Load(file, {{"exch01", 111}}).ok());
  EXPECT_EQ(again.size(), 1u);
  EXPECT_TRUE(again.AdoptionRefusal("exch01", 7, kAlice));
  again.RemoveFile();
  EXPECT_FALSE(fs::exists(file));
  EXPECT_EQ(fs::directory_iterator(dir.path()), fs::directory_iterator());  // no temp left
}

TEST(OwnerRecords, ABadFileKeepsNoRecordAndALinkIsNeitherFollowedNorWrittenThrough) {
  ScratchDir dir("dsbowners");
  const fs::path file = dir.path() / "dsb.sock.owners";
  for (const std::string& text :
       {std::string("not json"), std::string("{\"records\": 3}"),
        std::string("{\"records\": [{\"target\": \"exch01\", \"instance\": 1, \"owner\": -1, "
                    "\"uid\": 5}]}"),
        std::string("{\"records\": [{\"target\": \"exch01\", \"instance\": 1, \"owner\": 2, "
                    "\"uid\": 4294967296}]}")}) {
    WriteText(file, text);
    OwnerRecords r;
    const Status st = r.Load(file, {{"exch01", 1}});
    EXPECT_FALSE(st.ok()) << text;
    EXPECT_THAT(st.message(), HasSubstr(file.string())) << text;
    EXPECT_EQ(r.size(), 0u) << text;
  }
  fs::remove(file);
  const fs::path victim = dir.path() / "victim";
  WriteText(victim, "{\"records\": []}");
  fs::create_symlink(victim, file);
  OwnerRecords r;
  const Status st = r.Load(file, {{"exch01", 1}});
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("link"));
  r.Set("exch01", 2, {.instance = 1, .uid = kAlice});
  ASSERT_TRUE(r.Save().ok());
  EXPECT_FALSE(fs::is_symlink(file));  // replaced, not followed
  std::ifstream in(victim);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "{\"records\": []}");
}

}  // namespace
}  // namespace dsb::broker
