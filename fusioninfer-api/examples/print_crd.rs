fn main() {
    let crd = fusioninfer_api::crd::inference_service_crd();
    println!("{}", serde_json::to_string(&crd).unwrap());
}
