-- segwatch auto-forward for Orthanc.
--
-- Every series that becomes stable (no new instance for "StableAge" seconds)
-- and whose Modality is SEG is sent to the DICOMweb server registered as
-- "segwatch" in DicomWeb.Servers, via the DICOMweb plugin's STOW-RS client
-- (POST /dicom-web/servers/segwatch/stow). The transfer runs as an
-- asynchronous Orthanc job; its progress and errors are visible under
-- GET /jobs/{id} and in the Orthanc log. Other modalities are ignored.
--
-- Load it with  "LuaScripts" : [ "/etc/orthanc/segwatch-autoforward.lua" ]
-- The DICOMweb plugin must be loaded too ("Plugins").

-- Name of the DicomWeb.Servers entry to send to.
local SEGWATCH_SERVER = 'segwatch'

-- STOW-RS jobs started by this script: job ID -> Orthanc series ID. Kept in
-- memory only (lost on restart), used to name the series in the log.
segwatchJobs = {}

-- Sends the whole series. A series can become stable again when new
-- instances arrive later; it is then sent again in full (segwatch must treat
-- a SOPInstanceUID it already has as a duplicate).
local function stowSeries(seriesId, label)
   local body = {}
   body['Resources'] = { seriesId }
   body['Synchronous'] = false
   -- Orthanc job priority: forwarding must not starve the viewer.
   body['Priority'] = 0

   -- The third argument (false) keeps the plugins' routes reachable: the
   -- STOW-RS client lives in the DICOMweb plugin, not in the built-in API.
   -- DumpJson(body) without a second argument: DumpJson(body, true) would
   -- turn the number 0 into the string "0", which the plugin rejects.
   local ok, answer = pcall(RestApiPost,
                            '/dicom-web/servers/' .. SEGWATCH_SERVER .. '/stow',
                            DumpJson(body), false)
   -- RestApiPost returns nil (and Orthanc logs the reason) when the call
   -- fails, e.g. unknown server name or plugin not loaded.
   if not ok or answer == nil then
      print('segwatch: cannot start STOW-RS of ' .. label .. ': ' ..
            tostring(answer or 'see the errors above in the Orthanc log'))
      return
   end
   local job = ParseJson(answer)
   local jobId = (job ~= nil and job['ID']) or '?'
   segwatchJobs[jobId] = seriesId
   print('segwatch: forwarding ' .. label .. ' to DICOMweb server "' ..
         SEGWATCH_SERVER .. '" as job ' .. jobId)
end

function OnStableSeries(seriesId, tags, metadata)
   -- Ask the REST API rather than trusting "tags": it always has the series'
   -- main DICOM tags, including Modality, whatever the Orthanc version.
   local ok, answer = pcall(RestApiGet, '/series/' .. seriesId, true)
   if not ok then
      print('segwatch: cannot read series ' .. seriesId .. ': ' .. tostring(answer))
      return
   end
   local series = ParseJson(answer)
   local main = series['MainDicomTags'] or {}
   local modality = main['Modality'] or (tags and tags['Modality']) or ''
   if string.upper(modality) ~= 'SEG' then
      return
   end
   local label = 'SEG series ' .. seriesId ..
      ' (SeriesInstanceUID ' .. (main['SeriesInstanceUID'] or '?') ..
      ', ' .. tostring(#(series['Instances'] or {})) .. ' instance(s))'
   stowSeries(seriesId, label)
end

-- Orthanc does not retry a failed job by itself, and with DICOMweb plugin
-- 1.7 "POST /jobs/{id}/resubmit" of a failed STOW-RS job sends an EMPTY
-- multipart body (no instance), so it cannot be used to resend. Instead, a
-- failed forward is logged with the series to send again by hand:
--   curl -X POST http://ORTHANC/dicom-web/servers/segwatch/stow \
--        -d '{"Resources":["<series id>"],"Synchronous":false}'
-- Note: Orthanc runs all "LuaScripts" in one Lua context, so if another
-- script of this Orthanc also defines OnJobFailure, OnJobSuccess or
-- OnStableSeries, the one loaded last wins: merge them in that case.
function OnJobFailure(jobId)
   local seriesId = segwatchJobs[jobId]
   if seriesId == nil then
      return  -- not one of ours
   end
   segwatchJobs[jobId] = nil
   local detail = ''
   local answer = RestApiGet('/jobs/' .. jobId, true)
   if answer ~= nil then
      local content = ParseJson(answer)['Content'] or {}
      detail = tostring(content['FunctionErrorDescription'] or '') .. ' ' ..
         tostring(content['FunctionErrorDetails'] or '')
   end
   print('segwatch: STOW-RS job ' .. jobId .. ' failed: ' .. detail ..
         ' -- series ' .. seriesId .. ' was NOT delivered; resend with ' ..
         'POST /dicom-web/servers/' .. SEGWATCH_SERVER .. '/stow {"Resources":["' ..
         seriesId .. '"]}')
end

function OnJobSuccess(jobId)
   local seriesId = segwatchJobs[jobId]
   if seriesId ~= nil then
      segwatchJobs[jobId] = nil
      print('segwatch: series ' .. seriesId .. ' delivered (job ' .. jobId .. ')')
   end
end
