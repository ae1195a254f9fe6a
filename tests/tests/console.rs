//! The web console, used as a person would in headless Chromium: sign in with an API key, upload a
//! dataset (a bad one first: its errors appear in place with line numbers), profile how the base model
//! routes it, create a job from the form
//! (a refused option marked on its field, then an estimate), follow it live, pause and resume it, and
//! read its charts, heatmap, evaluation table, checkpoints and artifacts; download one and cancel
//! another job. Screenshots of each page land in the target directory.

use std::time::Duration;

use moetune_e2e::browser::Browser;
use moetune_e2e::{spawn_runner, TestEnv};
use serde_json::{json, Value};
use sha2::Digest;
use sqlx::PgPool;

const SHORT: Duration = Duration::from_secs(15);

#[sqlx::test(migrations = "../migrations")]
async fn a_job_is_driven_through_the_console(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "console-runner");
    let key = env.api_key("acme", "console", None).await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let browser = Browser::start(&shots).await;
    let page = |fragment: &str| format!("{}/console/{fragment}", env.base);

    // A wrong key is refused with the API's message; the right one opens the job list.
    browser.client.goto(&page("")).await.unwrap();
    browser.type_into("#api-key", "mtk-not-a-key").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait_for("#sign-in-result .error", SHORT).await;
    browser.screenshot("01-sign-in-refused").await;
    browser.type_into("#api-key", &key).await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait_for_text("#jobs", SHORT, |t| t.contains("No jobs yet")).await;

    // A dataset with a broken line is refused and its lines are listed where it was uploaded.
    let bad = shots.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n{\"prompt\": 5}\nnot json\n").unwrap();
    browser.client.goto(&page("#/files")).await.unwrap();
    browser.wait_for("#upload-file", SHORT).await.send_keys(bad.to_str().unwrap()).await.unwrap();
    browser.click("#upload button[type=submit]").await;
    browser.wait_for("#upload-result li[data-line=\"2\"]", SHORT).await;
    assert!(browser.text("#upload-result").await.contains("line 3"), "{}", browser.text("#upload-result").await);
    browser.screenshot("02-dataset-refused").await;
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo/finance-alpaca-mini.jsonl").canonicalize().unwrap();
    browser.find("#upload-file").await.send_keys(demo.to_str().unwrap()).await.unwrap();
    browser.click("#upload button[type=submit]").await;
    let uploaded = browser.wait_for("#upload-result p.ok", SHORT).await;
    let file_id = uploaded.attr("data-file").await.unwrap().expect("the new file's id");
    assert!(uploaded.text().await.unwrap().contains("240 examples"));
    browser.wait_for(&format!("#files tr[data-file=\"{file_id}\"]"), SHORT).await;
    browser.screenshot("03-datasets").await;

    // How a base model routes the dataset: none yet, then one run on the runner and drawn, a cell per
    // MoE layer and expert.
    browser.click(&format!("button[data-routing=\"{file_id}\"]")).await;
    browser.click("#profile-model option[value=\"moetune/tiny-mixtral\"]").await;
    browser.wait_for("#profile-result [data-status=\"none\"]", SHORT).await;
    browser.type_into("#profile-examples", "32").await;
    browser.click("#profile-run").await;
    let heatmap = browser.wait_for("#profile-heatmap", Duration::from_secs(120)).await;
    assert_eq!(heatmap.attr("data-drawn").await.unwrap().as_deref(), Some("8"));
    assert!(browser.text("#profile-result").await.contains("of 32 examples"), "{}", browser.text("#profile-result").await);
    browser.screenshot("03-routing-profile").await;

    // The form shows every MoE option with the API's default; a refused option is marked on its field.
    browser.client.goto(&page("#/new")).await.unwrap();
    browser.wait_for("#new-job", SHORT).await;
    assert_eq!(browser.attribute("#opt-method-moe_sft_qat-learning_rate", "placeholder").await.as_deref(), Some("0.00001"));
    browser.click("#job-model option[value=\"moetune/tiny-mixtral\"]").await;
    browser.click(&format!("#job-training-file option[value=\"{file_id}\"]")).await;
    browser.click("details[data-param=\"method.moe_sft_qat.lora\"] > summary").await;
    browser.type_into("#opt-method-moe_sft_qat-lora-r", "0").await;
    browser.click("#new-job button[type=submit]").await;
    browser.wait_for(".field.refused[data-param=\"method.moe_sft_qat.lora.r\"]", SHORT).await;
    assert!(browser.text("#job-result").await.contains("lora.r"), "{}", browser.text("#job-result").await);
    browser.screenshot("04-option-refused").await;
    browser.type_into("#opt-method-moe_sft_qat-lora-r", "8").await;
    browser.type_into("#job-batch-size", "8").await;
    browser.type_into("#job-seed", "11").await;
    browser.type_into("#opt-method-moe_sft_qat-learning_rate", "0.001").await;
    browser.type_into("#opt-method-moe_sft_qat-max_steps", "80").await;
    browser.type_into("#opt-method-moe_sft_qat-checkpoint_every_n_steps", "20").await;
    browser.click("#opt-method-moe_sft_qat-lora-target_experts option[value=\"true\"]").await;
    browser.click("details[data-param=\"method.moe_sft_qat.monitor\"] > summary").await;
    browser.type_into("#opt-method-moe_sft_qat-monitor-every_n_steps", "20").await;
    browser.click("details[data-param=\"method.moe_sft_qat.qat\"] > summary").await;
    browser.type_into("#opt-method-moe_sft_qat-qat-steps", "4").await;
    browser.click("#estimate").await;
    let estimate = browser.wait_for("#estimate-result", SHORT).await;
    assert_eq!(estimate.attr("data-fits").await.unwrap().as_deref(), Some("true"), "{}", estimate.text().await.unwrap());
    browser.screenshot("05-estimate").await;
    browser.click("#new-job button[type=submit]").await;

    // The job page follows the job live; pause and resume it from there.
    let heading = browser.wait_for("#job-header h1", SHORT).await.text().await.unwrap();
    let id = heading.trim().to_string();
    assert!(id.starts_with("ftjob-"), "{id}");
    let job = env.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await;
    let options = &job["method"]["moe_sft_qat"];
    assert_eq!((options["max_steps"].as_u64(), options["lora"]["target_experts"].as_bool(), options["qat"]["steps"].as_u64()), (Some(80), Some(true), Some(4)), "{job:#}");
    assert_eq!((options["lora"]["r"].as_u64(), options["lora"]["alpha"].as_f64()), (Some(8), Some(16.0)), "defaults kept");
    browser.wait_for_text("#progress-text", Duration::from_secs(120), |t| t.starts_with("SFT step")).await;
    browser.screenshot("06-running").await;
    browser.click("#pause").await;
    browser.wait_for("#job-status[data-status=\"paused\"]", Duration::from_secs(90)).await;
    browser.wait_for("#checkpoints tr[data-checkpoint]", SHORT).await;
    browser.screenshot("07-paused").await;
    browser.click("#resume").await;
    browser.wait_for("#job-status[data-status=\"succeeded\"]", Duration::from_secs(300)).await;
    assert!(!scheduler.is_finished());

    // Everything the finished job has is on its page.
    let job = env.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(job["attempt"], 2, "paused once, resumed once");
    browser.wait_for_text("#progress-text", SHORT, |t| t.starts_with("QAT step 4 of 4")).await;
    assert_eq!(browser.attribute("#loss-chart", "data-drawn").await.as_deref(), Some("3"), "SFT, QAT and validation loss");
    assert_eq!(browser.attribute("#lr-chart", "data-drawn").await.as_deref(), Some("1"));
    let legend = browser.texts("#loss-chart .legend li span:last-child").await;
    assert_eq!(legend, ["SFT training loss", "QAT training loss", "validation loss"]);
    let events = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/events?limit=1000")).await;
    let last_check = events["data"].as_array().unwrap().iter().find(|e| e["type"] == "monitor").expect("a monitor check").clone();
    let cells: usize = last_check["data"]["layers"].as_array().unwrap().iter().map(|l| l["counts"].as_array().unwrap().len()).sum();
    assert_eq!(browser.attribute("#usage-heatmap", "data-drawn").await, Some(cells.to_string()), "every expert of every layer");
    let alerts = events["data"].as_array().unwrap().iter().filter(|e| e["type"] == "monitor" && e["data"]["alert"] == true).count();
    assert_eq!(browser.find_all("#alerts li.alert").await.len(), alerts);
    assert_eq!(browser.find_all("#evaluation tbody tr").await.len(), 4, "base, SFT, PTQ, SFT+QAT");
    let checkpoints = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/checkpoints?limit=100")).await;
    assert_eq!(browser.find_all("#checkpoints tr[data-checkpoint]").await.len(), checkpoints["data"].as_array().unwrap().len());
    let artifacts = job["artifacts"].as_array().unwrap();
    assert_eq!(browser.find_all("#artifacts tr[data-artifact]").await.len(), artifacts.len());
    browser.screenshot("08-succeeded").await;

    // An artifact downloads through the page (with the key) byte for byte.
    let smallest = artifacts.iter().min_by_key(|a| a["bytes"].as_i64().unwrap()).unwrap();
    let name = smallest["name"].as_str().unwrap();
    browser.click(&format!("button[data-download=\"{name}\"]")).await;
    let saved = browser.downloads.join(name.replace('/', "_"));
    let deadline = std::time::Instant::now() + SHORT;
    while !saved.exists() {
        assert!(std::time::Instant::now() < deadline, "{} was not downloaded", saved.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hex::encode(sha2::Sha256::digest(std::fs::read(&saved).unwrap())), smallest["sha256"].as_str().unwrap());

    // The job list shows it; a second job is cancelled from its page.
    browser.client.goto(&page("#/jobs")).await.unwrap();
    browser.wait_for_text(&format!("#jobs tr[data-job=\"{id}\"]"), SHORT, |t| t.contains("succeeded")).await;
    browser.screenshot("09-jobs").await;
    let other: Value = env
        .post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 2000}}}))
        .await
        .json()
        .await
        .unwrap();
    let other = other["id"].as_str().unwrap();
    browser.client.goto(&page(&format!("#/jobs/{other}"))).await.unwrap();
    browser.wait_for("#job-status", SHORT).await;
    browser.click("#cancel").await;
    browser.wait_for("#job-status[data-status=\"cancelled\"]", SHORT).await;
    assert!(browser.find("#cancel").await.attr("disabled").await.unwrap().is_some(), "a finished job cannot be cancelled again");
    browser.screenshot("10-cancelled").await;
    browser.client.clone().close().await.unwrap();
}
